# SPDX-License-Identifier: MIT
"""Start examples/monitor on a free port and talk to it (tests/http/*.py)."""
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


class Monitor:
    def __init__(self, exe, *args):
        self.p = subprocess.Popen([exe, '-p', '0'] + list(args), stdout=subprocess.PIPE,
                                  stderr=sys.stderr, text=True)
        line = self.p.stdout.readline()
        if 'listening on http://' not in line:
            self.p.kill()
            raise SystemExit('monitor did not start: %r' % line)
        self.base = line.split('listening on ')[1].split()[0]

    def get(self, path, headers=None):
        """(status, headers, body bytes); HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json(self, path):
        st, hd, body = self.get(path)
        # Strict: python's parser rejects trailing commas, bare words, NaN
        # is refused below, and duplicate keys are caught by the hook.
        def no_dupes(pairs):
            keys = [k for k, _ in pairs]
            if len(keys) != len(set(keys)):
                raise ValueError('duplicate keys in %s: %r' % (path, keys))
            return dict(pairs)

        def no_const(c):
            raise ValueError('non-JSON constant %s in %s' % (c, path))

        return st, hd, json.loads(body.decode('utf-8'), object_pairs_hook=no_dupes,
                                  parse_constant=no_const)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(2)       # SIGINT: the example stops cleanly
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                raise SystemExit('monitor did not stop on SIGINT')
        rest = self.p.stdout.read()
        self.p.stdout.close()
        if self.p.returncode != 0:
            raise SystemExit('monitor exited with %d' % self.p.returncode)
        return rest


def wait_steady(m, keys=('sent', 'ready', 'delayed', 'in_flight', 'dlq_depth'), timeout=60):
    """Wait until two summaries 1.2 s apart agree on keys (producers stopped)."""
    deadline = time.time() + timeout
    prev = None
    while time.time() < deadline:
        _, _, s = m.json('/summary')
        cur = ([[q[k] for k in keys] for q in s['queues']],
               [[[u['pending'], u['delivered'], u['received'], u['dropped']] for u in b['subs']]
                for b in s['buses']])
        busy = any(q['ready'] or q['delayed'] or q['in_flight']
                   for q in s['queues'] if q['dlq'] is not None)
        if cur == prev and not busy:
            return s
        prev = cur
        time.sleep(1.2)
    raise SystemExit('the workload did not settle')
