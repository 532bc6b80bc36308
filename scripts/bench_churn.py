"""What tcpoom costs a busy host: loopback connections per second with and
without `tcpoom trace` attached.

    python3 -m scripts.bench_churn [--runs 5] [--seconds 3] [--clients 1]

The workload runs in a private network namespace (deleted afterwards): one
process accepts and closes, --clients processes connect and close as fast as
they can, so every connection passes through the state changes tcpoom's
inet_sock_set_state program examines (about ten per connection) and the
client's reset through tcp_send_reset, where the oom_check program looks. Runs
alternate without/with (ABBA order, so drift cancels); medians are compared.
The tracer watches every namespace, all families, as an operator would run it.
Each process is pinned to a core (server on the first, clients on the next):
unpinned, the scheduler's placement made runs vary from 15k to 46k/s.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 7070
_LINGER_0 = struct.pack("ii", 1, 0)


# ------------------------------------------------------------ the workload (in the namespace)

def _pin(cpu: int) -> None:
    # one process a core, always the same: the scheduler's placement was the
    # largest noise between runs (15k to 46k connections/s unpinned)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def _server(ready) -> None:
    _pin(0)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", PORT))
    ls.listen(4096)
    ready.set()
    while True:
        c, _ = ls.accept()
        c.close()


def _client(seconds: float, out, cpu: int) -> None:
    _pin(cpu)
    done = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = socket.socket()
        # closed with a reset, as a load balancer's health checks and many
        # clients do: the namespace does not fill with TIME_WAIT sockets over
        # the runs (which would slow the later ones and overflow the death row)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        try:
            s.connect(("127.0.0.1", PORT))
            done += 1
        except OSError:
            errors += 1
        s.close()
    out.put((done, errors))


def load(seconds: float, clients: int) -> None:
    """Inside the namespace: print connections/s and errors."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write("1024 65535")
    with open("/proc/sys/net/ipv4/tcp_tw_reuse", "w") as f:
        f.write("1")
    ready, out = multiprocessing.Event(), multiprocessing.Queue()
    server = multiprocessing.Process(target=_server, args=(ready,), daemon=True)
    server.start()
    ready.wait(5)
    procs = [multiprocessing.Process(target=_client, args=(seconds, out, 1 + i)) for i in range(clients)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    server.terminate()
    print(sum(r[0] for r in results) / seconds, sum(r[1] for r in results))


# ------------------------------------------------------------ the benchmark

def churn(netns_name: str, seconds: float, clients: int) -> float:
    r = subprocess.run(["ip", "netns", "exec", netns_name, sys.executable, "-m", "scripts.bench_churn",
                        "--load", str(seconds), "--clients", str(clients)],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    rate, errors = r.stdout.split()
    if int(errors):
        print(f"  ({errors} failed connects)", file=sys.stderr)
    return float(rate)


def start_tracer() -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "tracer", "trace"], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        line = p.stderr.readline()
        if line.startswith("tcpoom: tracing"):
            return p
        if not line:
            raise RuntimeError("tcpoom trace did not start")


def prog_ids() -> set:
    """Ids of every BPF program loaded now: what our tracer added is the difference
    (other tracers on a shared host load programs of the same names)."""
    import json
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True)
    return {p["id"] for p in json.loads(out.stdout)}


def bpf_run_time(per_program: bool = False, ids: Optional[set] = None) -> tuple:
    """(run_time_ns, run_count) summed over tcpoom's loaded programs, from the
    kernel's own BPF statistics (kernel.bpf_stats_enabled), via bpftool; with
    per_program, a third item: {name: run_time_ns}."""
    import json
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True)
    progs = [p for p in json.loads(out.stdout) if (p.get("name", "").endswith(_OURS)
             or p.get("name", "").startswith(_OURS_PREFIX)) and (ids is None or p["id"] in ids)]
    total = sum(p.get("run_time_ns", 0) for p in progs), sum(p.get("run_cnt", 0) for p in progs)
    if per_program:
        names: dict = {}
        for p in progs:
            names[p["name"]] = names.get(p["name"], 0) + p.get("run_time_ns", 0)
        return total + (names,)
    return total


# the suffixes of tcpoom's program names (bpf/tcpoom.bpf.c)
_OURS = ("_btf", "_raw", "_fentry", "_fexit", "_kprobe", "_kretprobe")
_OURS_PREFIX = ("owner_",)     # bpftool shows 15 characters of a name ("owner_rcvspace_")
_STATS = "/proc/sys/kernel/bpf_stats_enabled"


def measure(runs: int, seconds: float, clients: int) -> dict:
    sys.path.insert(0, ROOT)
    from tracer.host import netns
    without, with_, ns_per_conn, per_prog = [], [], [], []
    with open(_STATS) as f:
        stats_before = f.read().strip()
    try:
        with netns.temporary("tcpoom-bench-") as name:
            churn(name, 1.0, clients)                  # warm up
            for i in range(runs):
                for traced in ((False, True) if i % 2 == 0 else (True, False)):
                    if traced:
                        tracer = start_tracer()
                        time.sleep(0.3)
                        with_.append(churn(name, seconds, clients))
                        tracer.send_signal(signal.SIGINT)
                        tracer.communicate(timeout=30)
                    else:
                        without.append(churn(name, seconds, clients))
            # the programs' own time, measured by the kernel in runs of their
            # own: the statistics cost two clock reads a program run, which
            # would weigh on the throughput above (and are counted in this)
            for _ in range(3):
                before = prog_ids()
                tracer = start_tracer()
                ours = prog_ids() - before
                time.sleep(0.3)
                with open(_STATS, "w") as f:
                    f.write("1")
                rate = churn(name, seconds, clients)
                run_ns, _, names = bpf_run_time(per_program=True, ids=ours)
                with open(_STATS, "w") as f:
                    f.write(stats_before)
                ns_per_conn.append(run_ns / (rate * seconds))
                per_prog.append({k: v / (rate * seconds) for k, v in names.items()})
                tracer.send_signal(signal.SIGINT)
                tracer.communicate(timeout=30)
    finally:
        with open(_STATS, "w") as f:
            f.write(stats_before)
    a, b = statistics.median(without), statistics.median(with_)
    ns = statistics.median(ns_per_conn)
    return {"without": a, "with": b, "overhead_pct": (a - b) / a * 100,
            "runs_without": without, "runs_with": with_,
            "bpf_ns_per_connection": ns, "bpf_share_pct": ns * a / 1e9 * 100,
            "bpf_ns_per_program": {k: statistics.median(d.get(k, 0) for d in per_prog)
                                   for k in sorted({k for d in per_prog for k in d})}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--load", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        load(args.load, args.clients)
        return 0
    r = measure(args.runs, args.seconds, args.clients)
    print(f"connections/s without tcpoom {r['without']:,.0f}, with {r['with']:,.0f}: "
          f"{r['overhead_pct']:+.2f}% fewer (medians of {args.runs})")
    print(f"  tcpoom's BPF programs: {r['bpf_ns_per_connection']:.0f} ns of kernel time per connection "
          f"(kernel.bpf_stats_enabled), {r['bpf_share_pct']:.2f}% of a connection's time at this rate")
    print("  per program (ns per connection): " +
          ", ".join(f"{k} {v:.0f}" for k, v in r["bpf_ns_per_program"].items()))
    print("  without:", " ".join(f"{x:,.0f}" for x in r["runs_without"]))
    print("  with:   ", " ".join(f"{x:,.0f}" for x in r["runs_with"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
