# SPDX-License-Identifier: MIT
"""Shared by scripts/bench-report, scripts/bench-table and scripts/bench-profile.

Results reads Google Benchmark JSON files (one per suite: ring, queue,
bus, durable) and keeps every repetition of every benchmark under its
name without the run-time suffixes (so "quay_mpmc/4P4C/repeats:5/
manual_time" is "quay_mpmc/4P4C" and "BM_fdatasync_per_message/
iterations:1000/real_time/threads:1" is "BM_fdatasync_per_message/
threads:1"). TARGETS are the project's performance targets (issue 17's
items 1-6 and the earlier ring ones), each computed from the results of
one run; nothing but the goals themselves is written here.
"""
import json
import re
import statistics

_SUFFIX = re.compile(r"/(repeats:\d+|iterations:\d+|manual_time|real_time)(?=/|$)")


def norm(name):
    """A benchmark's name without its repetition/iteration/time suffixes."""
    return _SUFFIX.sub("", name)


class Results:
    def __init__(self):
        self.runs = {}     # (suite, name) -> [benchmark dicts, one per repetition]
        self.errors = []   # "suite name: message" of each failed check
        self.data = {}     # suite -> the whole JSON

    def add(self, suite, data):
        self.data[suite] = data
        for b in data.get("benchmarks", []):
            name = norm(b.get("run_name", b["name"]))
            if b.get("error_occurred"):
                self.errors.append(f"{suite} {name}: {b.get('error_message', '?')}")
                continue
            if b.get("run_type") == "aggregate":
                continue
            self.runs.setdefault((suite, name), []).append(b)

    def load(self, suite, path):
        """Adds the JSON at path; False (and an error) when it is missing or unreadable."""
        try:
            with open(path) as f:
                self.add(suite, json.load(f))
            return True
        except (OSError, ValueError) as e:
            self.errors.append(f"{suite}: no results ({e})")
            return False

    def values(self, suite, name, key="items_per_second"):
        return [b[key] for b in self.runs.get((suite, name), []) if key in b]

    def med(self, suite, name, key="items_per_second"):
        v = self.values(suite, name, key)
        return statistics.median(v) if v else None

    def spread(self, suite, name, key="items_per_second"):
        v = self.values(suite, name, key)
        return (min(v), max(v)) if v else None

    def names(self, suite):
        return sorted(n for s, n in self.runs if s == suite)


def si(v, digits=3):
    if v is None:
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.{digits}g} {suf}"
    return f"{v:.{digits}g}"


def rr(a, b):
    return a / b if a and b else None


# ---- targets ---------------------------------------------------------------
# kind: "ratio" (value >= goal, shown 1.23x), "ratio_max" (a ratio <= goal),
# "rate" (messages/s >= goal), "ns" (ns per message <= goal), "frac" (a
# fraction >= goal).
# profile: the (suite, benchmark) pairs scripts/bench-profile records when
# the target is missed (quay's side; the peer's when useful to compare).

SUITE_BIN = {"ring": "bench_ring", "queue": "bench_queue", "bus": "bench_bus",
             "durable": "bench_queue_durable"}


class Target:
    def __init__(self, item, label, kind, goal, fn, profile=(), uses=()):
        self.item, self.label, self.kind, self.goal = item, label, kind, goal
        self.fn, self.profile = fn, list(profile)
        self.uses = list(uses)  # (suite, benchmark) it reads: "n/a" says which are missing

    def value(self, res):
        return self.fn(res)

    def met(self, v):
        if v is None:
            return None
        return v <= self.goal if self.kind in ("ns", "ratio_max") else v >= self.goal

    def show(self, v):
        if v is None:
            return "-"
        if self.kind in ("ratio", "ratio_max"):
            return f"{v:.2f}x" if v < 100 else f"{v:.0f}x"
        if self.kind == "rate":
            return f"{si(v)}/s"
        if self.kind == "ns":
            return f"{v:.0f} ns"
        return f"{v:.2f}"

    def goal_text(self):
        op = "<=" if self.kind in ("ns", "ratio_max") else ">="
        if self.kind in ("ratio", "ratio_max"):
            return f"{op} {self.goal:g}x"
        return f"{op} {self.show(self.goal)}"


def _ratio(sa, a, sb, b):
    return lambda r: rr(r.med(sa, a), r.med(sb, b))


def _rate(s, a):
    return lambda r: r.med(s, a)


def _ns(s, a):
    return lambda r: rr(1e9, r.med(s, a))


def _collapse(s, a):
    def f(r):
        v = r.values(s, a)
        m = statistics.median(v) if v else None
        return min(v) / m if m else None
    return f


def _t(item, label, kind, goal, fn, profile=(), uses=()):
    return Target(item, label, kind, goal, fn, profile, uses)


def _ratio_t(item, label, goal, a, b, profile_b=False):
    (sa, na), (sb, nb) = a, b
    prof = [a, b] if profile_b else [a]
    return _t(item, label, "ratio", goal, _ratio(sa, na, sb, nb), prof, [a, b])


R = "ring"
TARGETS = [
    # Issue 17, item 1: bursts.
    _ratio_t(1, "SPSC 1P1C: burst 32 / single op", 4, (R, "quay_spsc_b32/1P1C"), (R, "quay_spsc/1P1C")),
    _ratio_t(1, "MPMC 1P1C: burst 32 / single op", 4, (R, "quay_mpmc_b32/1P1C"), (R, "quay_mpmc/1P1C")),
    _t(1, "SPSC 1P1C burst 32 rate", "rate", 300e6, _rate(R, "quay_spsc_b32/1P1C"),
       [(R, "quay_spsc_b32/1P1C")], [(R, "quay_spsc_b32/1P1C")]),
    # Item 2: SPSC single ops against ck_ring.
    _ratio_t(2, "SPSC 1P1C / ck_ring spsc", 2, (R, "quay_spsc/1P1C"), (R, "ck_spsc/1P1C"), True),
    # Item 3: MPMC against Vyukov, SPSC against cached-index Lamport, no collapse.
    _ratio_t(3, "MPMC 1P1C / Vyukov MPMC", 1.2, (R, "quay_mpmc/1P1C"), (R, "vyukov_mpmc/1P1C"), True),
    _ratio_t(3, "MPMC 4P4C / Vyukov MPMC", 1.2, (R, "quay_mpmc/4P4C"), (R, "vyukov_mpmc/4P4C"), True),
    _t(3, "MPMC 4P4C: slowest / median repetition (no collapse)", "frac", 1 / 3,
       _collapse(R, "quay_mpmc/4P4C"), [(R, "quay_mpmc/4P4C")], [(R, "quay_mpmc/4P4C")]),
    _t(3, "MPMC 8P8C: slowest / median repetition (no collapse)", "frac", 1 / 3,
       _collapse(R, "quay_mpmc/8P8C"), [(R, "quay_mpmc/8P8C")], [(R, "quay_mpmc/8P8C")]),
    _ratio_t(3, "SPSC 1P1C / cached-index Lamport SPSC", 1.2, (R, "quay_spsc/1P1C"), (R, "lamport_spsc/1P1C"),
             True),
    # Item 4: the bus.
    *[_ratio_t(4, f"bus publish / ZeroMQ PUB/SUB, {n} subscribers", 10, ("bus", f"BM_fanout/{n}"),
               ("bus", f"BM_zmq_fanout/{n}")) for n in (4, 16, 64)],
    _t(4, "bus publish to one exact subscriber, one thread", "rate", 40e6, _rate("bus", "BM_publish_exact_1"),
       [("bus", "BM_publish_exact_1")], [("bus", "BM_publish_exact_1")]),
    # The same with messages handed over (one reference each, no ref/unref
    # per message): the row above re-publishes one shared message.
    _t(4, "bus publish to one exact subscriber, one thread, messages handed over", "rate", 40e6,
       _rate("bus", "BM_publish_exact_1_owned"), [("bus", "BM_publish_exact_1_owned")],
       [("bus", "BM_publish_exact_1_owned")]),
    # Item 5: the queue.
    _t(5, "queue send+receive+ack, one thread, default clock", "ns", 100, _ns("queue", "pair_queue/clock:0"),
       [("queue", "pair_queue/clock:0")], [("queue", "pair_queue/clock:0")]),
    _t(5, "queue send+receive+ack, one thread, TSC clock", "ns", 100, _ns("queue", "pair_queue/clock:1"),
       [("queue", "pair_queue/clock:1")], [("queue", "pair_queue/clock:1")]),
    _t(5, "queue 1P1C, default clock", "rate", 8e6, _rate("queue", "queue/PC:1"),
       [("queue", "queue/PC:1")], [("queue", "queue/PC:1")]),
    _t(5, "queue 1P1C, TSC clock", "rate", 8e6, _rate("queue", "queue_tsc/PC:1"),
       [("queue", "queue_tsc/PC:1")], [("queue", "queue_tsc/PC:1")]),
    # Item 6: pipelined durable sends, SYNC mode.
    _ratio_t(6, "durable send_async, 1,024 in flight / write+fdatasync per message (1 thread each)", 50,
             ("durable", "BM_durable_send_async/mode:0/depth:1024"),
             ("durable", "BM_fdatasync_per_message/threads:1")),
    _ratio_t(6, "durable single sends, 8 threads / RocksDB synced Put, 8 threads", 1,
             ("durable", "BM_durable_send/mode:0/batch:1/threads:8"),
             ("durable", "BM_rocksdb_put_sync/threads:8")),
    # One thread each: SQLite's 8-thread run fails its own check under load.
    _ratio_t(6, "durable send_batch(32) / SQLite WAL FULL, one thread each", 10,
             ("durable", "BM_durable_send/mode:0/batch:32/threads:1"),
             ("durable", "BM_sqlite_wal_insert/normal:0/threads:1")),
]

# Earlier rounds' ring targets (docs/BENCHMARKS.md), printed by bench-table
# beside the issue 17 ones.
EARLIER_RING = [
    _ratio_t("-", f"MPMC {c} / mutex queue", 4, (R, f"quay_mpmc/{c}"), (R, f"mutex/{c}"))
    for c in ("1P1C", "2P2C", "4P4C")
] + [
    _ratio_t("-", "MPMC 1P1C / ck_ring mpmc", 5, (R, "quay_mpmc/1P1C"), (R, "ck_mpmc/1P1C")),
    *[_t("-", f"latency p50 {p} / raw", "ratio_max", 1.5,
         (lambda p: lambda r: rr(r.med(R, f"latency/{p}", "p50_ns"), r.med(R, "latency/raw", "p50_ns")))(p),
         [(R, f"latency/{p}")], [(R, f"latency/{p}"), (R, "latency/raw")]) for p in ("quay_spsc", "quay_mpmc")],
]

def evaluate(res, targets=None):
    """[(target, value, met)] for the targets (default TARGETS); met is None when a benchmark is missing."""
    out = []
    for t in targets if targets is not None else TARGETS:
        v = t.value(res)
        out.append((t, v, t.met(v)))
    return out


def status(met):
    return "n/a" if met is None else ("met" if met else "**missed**")


def profile_name(suite, bench):
    """The file name (no extension) of a benchmark's profile."""
    return suite + "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", bench).strip("_")


def _escape(s):
    return re.sub(r"([.^$|?*+()\[\]{}\\])", r"\\\1", s)


def bench_filter(bench):
    """A --benchmark_filter selecting exactly this benchmark (its name without suffixes)."""
    parts = bench.split("/")
    pat = "^" + _escape(parts[0])
    for p in parts[1:]:
        pat += "/((repeats|iterations):[0-9]+/|manual_time/|real_time/)*" + _escape(p)
    return pat + "(/|$)"
