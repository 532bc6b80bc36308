"""The reference pipeline of the benchmarks: the synthetic records read the
way bcc's Python tools read theirs, so tcpoom's figures have a yardstick.

    python3 -m scripts.bench_reference --driver-pid PID [--pages N]

The same synthetic source (bench_perf_sys_enter in bpf/bench.bpf.c) sends
each record with bpf_perf_event_output() into a perf buffer per CPU; libbpf's
perf buffer reader calls a Python function per event, which casts the record
to a ctypes structure, reads its fields and keeps a copy, as a bcc tool
that records would. Prints "reference: ready" on stderr once attached; on
SIGINT drains, then prints one JSON line: received, seen and lost (the
in-kernel counters), CPU seconds.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
from collections import Counter

from tracer.model import events as ev
from tracer.kernel import facts as kernel_facts, libbpf, loader
from tracer.kernel.plan import build

_CTYPES = {"Q": ctypes.c_uint64, "q": ctypes.c_int64, "I": ctypes.c_uint32, "i": ctypes.c_int32,
           "H": ctypes.c_uint16, "B": ctypes.c_uint8, "16s": ctypes.c_char * 16, "3q": ctypes.c_int64 * 3}


class Event(ctypes.Structure):
    """struct tcpoom_event as a bcc tool declares its event type."""
    _fields_ = [(name, _CTYPES[code]) for name, code in ev.LAYOUT]


SAMPLE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)
LOST_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--driver-pid", type=int, required=True)
    ap.add_argument("--pages", type=int, default=4096, help="perf buffer pages per CPU")
    args = ap.parse_args()
    assert ctypes.sizeof(Event) == ev.EVENT_SIZE

    received = 0
    lost_samples = 0
    peak = -1
    by_verdict: Counter = Counter()
    kept = []

    def on_event(ctx, cpu, data, size):
        nonlocal received, peak
        e = ctypes.cast(data, ctypes.POINTER(Event)).contents
        by_verdict[e.family, e.verdict] += 1
        if e.orphans >= 0 and e.shift >= 0 and e.orphans << e.shift > peak:
            peak = e.orphans << e.shift
        kept.append(ctypes.string_at(data, size))
        if len(kept) >= 4096:
            kept.clear()                         # stands for writing them out
        received += 1

    def on_lost(ctx, cpu, count):
        nonlocal lost_samples
        lost_samples += count

    facts = kernel_facts.gather()
    session = loader.Session(build(facts), loader.Filters(families=[]), ringbuf_bytes=4096,
                             synthetic_pid=args.driver_pid, synthetic="perf").start()
    l = libbpf.lib()
    l.perf_buffer__new.restype = ctypes.c_void_p
    l.perf_buffer__new.argtypes = [ctypes.c_int, ctypes.c_size_t, SAMPLE_FN, LOST_FN,
                                   ctypes.c_void_p, ctypes.c_void_p]
    l.perf_buffer__poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
    l.perf_buffer__consume.argtypes = [ctypes.c_void_p]
    l.perf_buffer__free.argtypes = [ctypes.c_void_p]
    sample_cb, lost_cb = SAMPLE_FN(on_event), LOST_FN(on_lost)
    pb = l.perf_buffer__new(session.map_fd("bench_perf"), args.pages, sample_cb, lost_cb, None, None)
    if not pb:
        print("reference: perf_buffer__new failed", file=sys.stderr)
        return 1
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    print("reference: ready", file=sys.stderr, flush=True)
    while not stop:
        l.perf_buffer__poll(pb, 100)
    l.perf_buffer__consume(pb)
    counters = session.counters()
    l.perf_buffer__free(pb)
    session.close()
    t = os.times()
    print(json.dumps({"received": received, "seen": counters[ev.CNT_OOM_CHECK],
                      "lost": counters[ev.CNT_LOST_BASE + ev.OOM_CHECK], "lost_samples": lost_samples,
                      "cpu_s": t.user + t.system}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
