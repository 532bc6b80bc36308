"""The ring buffer's wakeup policy against the kernel: the programs write
silently below a quarter of the ring and the consumer reads on a 100 ms timer,
so a storm costs one batch per period, not a wakeup per record. What a user
sees must not change: a lone event still reaches `trace` at once (well under
half a second), and a burst far larger than the wakeup mark, larger than the
whole ring, is drained as it comes and loses nothing."""
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from tracer.kernel import loader, ringbuf
from tracer.capture.capture import Capture, Stop

pytestmark = pytest.mark.kernel


def test_wakeup_mark_is_the_same_on_both_sides():
    with open(os.path.join(ROOT, "bpf", "tcpoom.h")) as f:
        m = re.search(r"#define WAKEUP_FILL_DIVISOR (\d+)", f.read())
    assert m and int(m.group(1)) == ringbuf.WAKEUP_FILL_DIVISOR


def _overflow(server: socket.socket) -> None:
    """One loopback connection closed by the client: with the namespace's only
    TIME_WAIT bucket taken, one TCPTimeWaitOverflow."""
    client = socket.create_connection(server.getsockname(), timeout=2)
    accepted, _ = server.accept()
    client.close()
    accepted.settimeout(2)
    accepted.recv(1)
    accepted.close()


def test_a_trickle_of_real_events_reaches_trace_within_half_a_second():
    from scripts.lab import sockets
    from scripts.lab.context import Context
    from scripts.lab.lab import Lab

    with Lab(prefix="tcpoom-wake-") as lab:
        ctx = Context(lab.netns_name, lab.sysctls, False)
        ctx.set_sysctl("net.ipv4.tcp_max_tw_buckets", 1)
        server = ctx.inside(lambda: sockets.listener(backlog=16))
        p = subprocess.Popen([sys.executable, "-m", "tracer", "trace", "--json", "--netns", lab.netns_name,
                              "--family", "tw_overflow"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        lines: "queue.Queue" = queue.Queue()
        try:
            assert p.stderr.readline().startswith("tcpoom: tracing"), p.stderr.read()
            threading.Thread(target=lambda: [lines.put((time.monotonic(), ln)) for ln in p.stdout],
                             daemon=True).start()
            ctx.inside(_overflow, server)         # takes the one bucket (or overflows)
            time.sleep(0.3)
            while not lines.empty():
                lines.get()
            delays = []
            for i in range(8):
                # spread over the consumer's 100 ms period
                time.sleep(0.13 + 0.05 * i)
                closed = time.monotonic()
                ctx.inside(_overflow, server)
                at, line = lines.get(timeout=2)
                assert '"family": "tw_overflow"' in line
                delays.append(at - closed)
        finally:
            server.close()
            p.send_signal(signal.SIGINT)
            out, _ = p.communicate(timeout=30)
    assert max(delays) < 0.5, delays


def test_a_burst_far_above_the_wakeup_mark_loses_nothing():
    ring = 1 << 20                        # 5698 records; woken at a quarter, 1424
    burst = 40                            # x 1000 records, 7 rings' worth, in ~0.1 s
    cap = Capture(loader.Filters(families=["oom_check"]), ring, synthetic_pid=os.getpid())
    cap.start()
    received = []

    def produce():
        time.sleep(0.2)
        for _ in range(burst):
            os.getpid()                   # 1000 records in one go
            time.sleep(0.002)

    try:
        t = threading.Thread(target=produce)
        t.start()
        totals = cap.run(lambda payload, n: received.append(n) or n, Stop(10, burst * 1000))
        t.join()
    finally:
        cap.close()
    assert totals.lost("oom_check") == 0
    assert sum(received) == burst * 1000
    # read in batches of many records, not one wakeup per record
    assert len(received) < burst * 10


def test_trace_count_stops_inside_a_batch():
    # a batch is now a poll period of a storm: --count must not print all of it
    p = subprocess.Popen([sys.executable, "-m", "tracer", "trace", "--json", "--count", "5",
                          "--family", "oom_check", "--synthetic-pid", str(os.getpid())],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().startswith("tcpoom: tracing"), p.stderr.read()
    os.getpid()                           # 1000 records in one go
    out, err = p.communicate(timeout=30)
    lines = out.strip().splitlines()
    assert len(lines) == 6 and '"stop_reason": "count"' in lines[-1], err
