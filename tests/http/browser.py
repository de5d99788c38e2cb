#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A real browser on /dashboard: headless Chromium loads the page from a
running examples/monitor, and the test reads the DOM after the page has
updated at least twice.

1. Live (producers running): the page lists every queue and subscription
   of /summary; each queue's "sent" shown is between the value /summary
   gave just before Chromium started and just after it ended (a counter:
   the page showed a real, current reading); a screenshot is saved.
2. Settled (producers stopped, queues drained): every number the page
   shows for a queue (sent, ready, delayed, in_flight, dlq) and a
   subscription (pending, delivered, received, dropped) equals /summary.
3. Many queues (monitor -e 47: 53 queues): the page lists every one and
   updates; a screenshot (dashboard-50.png) shows how it reads.

usage: browser.py MONITOR_EXE OUTDIR
"""
import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from monitor_proc import Monitor, wait_steady  # noqa: E402

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage', '--hide-scrollbars']


def check(cond, what):
    if not cond:
        raise SystemExit('FAIL: ' + what)


def chromium():
    for c in ('chromium', 'chromium-browser', 'google-chrome'):
        if shutil.which(c):
            return shutil.which(c)
    if os.path.exists('/usr/bin/chromium'):
        return '/usr/bin/chromium'
    raise SystemExit('FAIL: chromium not found (Debian package chromium)')


def run_chromium(url, extra, out=None):
    with tempfile.TemporaryDirectory(prefix='quay-chromium-') as ud:
        r = subprocess.run([chromium()] + FLAGS + ['--user-data-dir=' + ud] + extra + [url],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120, cwd=out)
    check(r.returncode == 0, 'chromium exited with %d' % r.returncode)
    return r.stdout.decode('utf-8', 'replace')


class Dom(html.parser.HTMLParser):
    """The rendered cards: queue name -> {label: data-v}, sub (bus, id) -> ..."""

    def __init__(self):
        super().__init__()
        self.queues, self.subs, self.cur, self.count, self.time_ms = {}, {}, None, 0, 0
        self.qstate, self.qalarms, self.qname, self.in_alarms = {}, {}, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'div' and 'data-queue' in a:
            self.cur = self.queues.setdefault(a['data-queue'], {})
            self.qname = a['data-queue']
            self.qstate[self.qname] = a.get('class', '').split()[-1]
            self.qalarms[self.qname] = ''
        elif tag == 'div' and a.get('class') == 'alarms' and self.qname is not None:
            self.in_alarms = self.qname
        elif tag == 'div' and 'data-sub' in a:
            self.cur = self.subs.setdefault((a['data-bus'], a['data-sub']), {})
            self.qname = None
        elif tag == 'td' and 'data-k' in a and self.cur is not None:
            self.cur[a['data-k']] = float(a['data-v'])
        elif tag == 'span' and a.get('id') == 'updated':
            self.count = int(a['data-count'])
            self.time_ms = int(a['data-time-ms'])


    def handle_endtag(self, tag):
        if tag == 'div':
            self.in_alarms = None

    def handle_data(self, data):
        if self.in_alarms is not None:
            self.qalarms[self.in_alarms] += data


def dom_of(text):
    d = Dom()
    d.feed(text)
    return d


def dump(m):
    # Virtual time: the page's 1 s timer fires a few times, each fetch of
    # /summary is a real request to the server.
    return dom_of(run_chromium(m.base + '/dashboard', ['--virtual-time-budget=4500', '--dump-dom']))


def main():
    exe, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    shot = os.path.join(os.path.abspath(outdir), 'dashboard.png')
    m = Monitor(exe, '-q', '25')
    try:
        time.sleep(3)
        # 1. live
        _, _, before = m.json('/summary')
        d = dump(m)
        _, _, after = m.json('/summary')
        check(d.count >= 2, 'the page updated %d times' % d.count)
        check(before['time_ms'] <= d.time_ms <= after['time_ms'], 'the page shows a reading taken meanwhile')
        check(set(d.queues) == {q['name'] for q in after['queues']}, 'queues on the page: %s' % sorted(d.queues))
        check(set(d.subs) == {(b['name'], u['id']) for b in after['buses'] for u in b['subs']},
              'subscriptions on the page: %s' % sorted(d.subs))
        for q0, q1 in zip(before['queues'], after['queues']):
            shown = d.queues[q0['name']]['sent']
            check(q0['sent'] <= shown <= q1['sent'], '%s sent %s outside [%d, %d]' %
                  (q0['name'], shown, q0['sent'], q1['sent']))
        check(any(d.queues[q['name']]['sent/s'] > 0 for q in after['queues']), 'a live rate is shown')
        print('live: %d updates, %d queues, %d subscriptions on the page' %
              (d.count, len(d.queues), len(d.subs)))
        if os.path.exists(shot):
            os.unlink(shot)
        run_chromium(m.base + '/dashboard', ['--virtual-time-budget=3500', '--window-size=1400,1000',
                                             '--screenshot=' + shot], out=outdir)
        check(os.path.getsize(shot) > 10000, 'screenshot written')
        print('screenshot: ' + shot)
        # 2. settled
        s = wait_steady(m)
        d = dump(m)
        _, _, s2 = m.json('/summary')
        check(d.count >= 2, 'the page updated %d times' % d.count)
        for q in s2['queues']:
            shown = d.queues[q['name']]
            for k, label in (('sent', 'sent'), ('ready', 'ready'), ('delayed', 'delayed'),
                             ('in_flight', 'in_flight'), ('dlq_depth', 'dlq')):
                check(shown[label] == q[k], '%s %s: page %s, /summary %s' % (q['name'], k, shown[label], q[k]))
        for b in s2['buses']:
            for u in b['subs']:
                shown = d.subs[(b['name'], u['id'])]
                for k in ('pending', 'delivered', 'received', 'dropped'):
                    check(shown[k] == u[k], 'sub %s %s: page %s, /summary %s' % (u['id'], k, shown[k], u[k]))
        check(any(q['dlq_depth'] > 0 for q in s2['queues']), 'a DLQ holds messages (the page shows a real number)')
        # States and alarm names, the queue's own alarms included
        # (reports has a DLQ alarm: "dlq", error).
        for q in s2['queues']:
            check(d.qstate[q['name']] == q['state'], '%s state: page %s, /summary %s' %
                  (q['name'], d.qstate[q['name']], q['state']))
            check(d.qalarms[q['name']] == ', '.join(q['alarms']), '%s alarms: page %r, /summary %s' %
                  (q['name'], d.qalarms[q['name']], q['alarms']))
        rep = [q for q in s2['queues'] if q['name'] == 'reports'][0]
        check(rep['dlq_depth'] == 0 or (rep['alarms'] == ['dlq'] and d.qalarms['reports'] == 'dlq' and
                                        d.qstate['reports'] == 'error'),
              'the page shows reports\' own dlq alarm: %r %s' % (d.qalarms['reports'], d.qstate['reports']))
        print('settled: states and alarms on the page equal /summary (reports: %s %s)' %
              (d.qstate['reports'], rep['alarms']))
        print('settled: every number on the page equals /summary')
    finally:
        m.stop()
    # 3. many queues
    m = Monitor(exe, '-e', '47')
    try:
        time.sleep(2)
        d = dump(m)
        _, _, s = m.json('/summary')
        check(len(s['queues']) == 53, '%d queues' % len(s['queues']))
        check(d.count >= 2 and set(d.queues) == {q['name'] for q in s['queues']},
              'all 53 queues on the page (%d shown, %d updates)' % (len(d.queues), d.count))
        shot50 = os.path.join(os.path.abspath(outdir), 'dashboard-50.png')
        run_chromium(m.base + '/dashboard', ['--virtual-time-budget=3500', '--window-size=1400,2600',
                                             '--screenshot=' + shot50], out=outdir)
        check(os.path.getsize(shot50) > 10000, 'screenshot written')
        print('50 queues: all on the page; screenshot: ' + shot50)
    finally:
        m.stop()
    print('OK')


if __name__ == '__main__':
    main()
