#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Real validators on a running workload (examples/monitor):

- `promtool check metrics` (Prometheus's own parser and linter) passes,
  with no lint complaint, on /metrics scraped while messages move;
- /summary and /health parse as strict JSON, have the documented shape,
  and /health's status code matches its status;
- once the producers stopped and the queues settled, /summary agrees with
  the queue gauges and counters on /metrics (which quay_queue_stats()
  measures at the scrape).

usage: validate.py MONITOR_EXE
"""
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, __import__('os').path.dirname(__file__))
from monitor_proc import Monitor, wait_steady  # noqa: E402

QUEUE_KEYS = {'name': str, 'dlq': (str, type(None)), 'state': str, 'alarms': list,
              'capacity': int, 'ready': int, 'delayed': int, 'in_flight': int, 'dlq_depth': int,
              'oldest_age_ns': int, 'sent': int, 'received': int, 'acked': int, 'nacked': int,
              'dead_lettered': int, 'rates': dict, 'ack_latency_ns': dict,
              'health': (str, type(None))}
SUB_KEYS = {'id': str, 'pattern': str, 'group': (str, type(None)), 'pending': int,
            'delivered': int, 'received': int, 'dropped': int}


def check(cond, what):
    if not cond:
        raise SystemExit('FAIL: ' + what)


def shape(obj, keys, where):
    check(set(obj) == set(keys), '%s keys %s' % (where, sorted(obj)))
    for k, t in keys.items():
        check(isinstance(obj[k], t) and not isinstance(obj[k], bool), '%s.%s type' % (where, k))


def check_summary(s):
    shape(s, {'time_ms': int, 'uptime_s': float, 'queues': list, 'buses': list}, 'summary')
    for q in s['queues']:
        shape(q, QUEUE_KEYS, 'queue ' + q.get('name', '?'))
        check(q['state'] in ('ok', 'degraded', 'error'), 'state')
        check(q['health'] in (None, 'healthy', 'degraded', 'failing'), 'health')
        for k in ('sent', 'received', 'acked', 'nacked', 'dead_lettered'):
            for w in ('_1s', '_1m'):
                check(isinstance(q['rates'][k + w], (int, float)) and q['rates'][k + w] >= 0, 'rate')
        lat = q['ack_latency_ns']
        check(set(lat) == {'count', 'p50', 'p99', 'p999'}, 'latency keys')
        if lat['count']:
            check(0 <= lat['p50'] <= lat['p99'] <= lat['p999'], 'percentiles ordered')
    for b in s['buses']:
        check({'name', 'state', 'alarms', 'published', 'delivered', 'lost', 'rates', 'subs'} == set(b),
              'bus keys %s' % sorted(b))
        for u in b['subs']:
            shape(u, SUB_KEYS, 'sub')


def check_health(m, verbose):
    st, _, h = m.json('/health?verbose' if verbose else '/health')
    check(set(h) == {'queues', 'buses', 'status'}, 'health keys')
    check(st == (503 if h['status'] == 'error' else 200), 'health code %d for %s' % (st, h['status']))
    for o in h['queues'] + h['buses']:
        for a in o['alarms']:
            if verbose:
                # built-in rules: name, severity, reason; a queue's own
                # alarms add value, raise, clear, since_ns
                check(set(a) in ({'name', 'severity', 'reason'},
                                 {'name', 'severity', 'reason', 'value', 'raise', 'clear', 'since_ns'})
                      and a['reason'], 'verbose alarm')
            else:
                check(isinstance(a, str), 'alarm name')
    return h


def promtool(body):
    r = subprocess.run(['promtool', 'check', 'metrics'], input=body, capture_output=True)
    out = (r.stdout + r.stderr).decode()
    check(r.returncode == 0 and out.strip() == '', 'promtool check metrics: rc %d\n%s' %
          (r.returncode, out))


def metric(text, name, **labels):
    want = ','.join('%s="%s"' % kv for kv in sorted(labels.items()))
    mt = re.search(r'^%s\{%s\} (\S+)$' % (re.escape(name), re.escape(want)), text, re.M)
    check(mt is not None, 'no %s{%s} on /metrics' % (name, want))
    return float(mt.group(1))


def main():
    check(shutil.which('promtool') is not None, 'promtool not found (Debian package prometheus)')
    m = Monitor(sys.argv[1], '-q', '6')
    try:
        time.sleep(2.5)
        for i in range(3):      # under load
            st, hd, body = m.get('/metrics')
            check(st == 200, '/metrics status %d' % st)
            check(hd['Content-Type'] == 'text/plain; version=0.0.4; charset=utf-8', 'content type')
            promtool(body)
            _, _, s = m.json('/summary')
            check_summary(s)
            check(any(q['rates']['sent_1s'] > 0 for q in s['queues']), 'messages are moving')
            check_health(m, False)
            check_health(m, True)
            time.sleep(0.7)
        print('promtool and JSON: OK under load (3 rounds)')
        s = wait_steady(m)
        _, _, text = m.get('/metrics')
        text = text.decode()
        promtool(text.encode())
        _, _, s2 = m.json('/summary')
        check_summary(s2)
        check(s2['queues'] == [dict(q, rates=q2['rates'], ack_latency_ns=q2['ack_latency_ns'],
                                    oldest_age_ns=q2['oldest_age_ns'])
                               for q, q2 in zip(s['queues'], s2['queues'])], 'settled')
        for q in s2['queues']:
            for k, fam in (('ready', 'quay_queue_ready'), ('delayed', 'quay_queue_delayed'),
                           ('in_flight', 'quay_queue_in_flight'), ('sent', 'quay_queue_sent_total'),
                           ('acked', 'quay_queue_acked_total'),
                           ('dead_lettered', 'quay_queue_dead_lettered_total')):
                check(metric(text, fam, queue=q['name']) == q[k],
                      '%s %s: /metrics %s, /summary %s' % (q['name'], k,
                                                           metric(text, fam, queue=q['name']), q[k]))
            if q['dlq']:
                d = [x for x in s2['queues'] if x['name'] == q['dlq']][0]
                check(q['dlq_depth'] == d['ready'] + d['delayed'] + d['in_flight'], 'dlq depth')
                check(metric(text, 'quay_queue_ready', queue=q['dlq']) == d['ready'], 'dlq ready')
        for b in s2['buses']:
            for u in b['subs']:
                lab = dict(bus=b['name'], sub=u['id'], pattern=u['pattern'])
                if u['group']:
                    lab['group'] = u['group']
                check(metric(text, 'quay_sub_pending', **lab) == u['pending'], 'sub pending')
                check(metric(text, 'quay_sub_delivered_total', **lab) == u['delivered'], 'delivered')
        h = check_health(m, True)
        # dlq_not_empty, or the queue's own dlq alarm (reports: raise 1)
        # that replaces it
        dlq_alarms = [q['name'] for q in h['queues']
                      if any(a['name'] in ('dlq_not_empty', 'dlq') for a in q['alarms'])]
        want = [q['name'] for q in s2['queues'] if q['dlq_depth'] > 0]
        check(dlq_alarms == want, 'dlq alarms %s vs depths %s' % (dlq_alarms, want))
        print('settled: /summary agrees with /metrics for %d queues, %d subscriptions' %
              (len(s2['queues']), sum(len(b['subs']) for b in s2['buses'])))
    finally:
        m.stop()
    print('OK')


if __name__ == '__main__':
    main()
