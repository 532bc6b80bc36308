"""What `tcpoom serve` costs left running: idle CPU and RSS, scrape latency
(with the namespace cap filled), and RSS through a storm.

    python3 -m scripts.bench_serve [--idle-seconds 600] [--storm-seconds 300]
        [--storm-rate 20000] [--netns 31] [-o docs/bench/serve.json]

Idle: serve as deployed (BPF attached, flight recorder writing its ring in a
temporary directory), scraped every 15 s like a default Prometheus; CPU time
and VmRSS of the process from /proc at the start and the end. Scrape latency:
200 scrapes in a row, with --netns extra named namespaces so serve reads
--netns + 1 of them per scrape. Scrape with cgroups: --cgroups real cgroups
(v1 memory hierarchy and the unified one, under their own
tcpoom-bench-<pid>.slice), --cgroups-with-sockets of them holding a loopback
connection whose sender pushes against a 64 KiB kmem.tcp limit (so they hold
socket memory and have refusals: the event slots of --max-cgroups fill and
spill into "other"); all removed afterwards. Storm: the synthetic source (bench_sys_enter,
as scripts/bench_record.py) offers --storm-rate events/s, RSS sampled every
10 s. Needs root.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from scripts.bench_record import BATCH, _cpu_seconds  # noqa: E402
from tests.prometheus_server import free_port  # noqa: E402


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024.0


def _start(state: str, *extra) -> tuple:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "tracer", "serve", "--listen", f"127.0.0.1:{port}",
                          "--state-dir", state, *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    while True:
        line = p.stderr.readline()
        if line.startswith("tcpoom: serving"):
            return p, f"http://127.0.0.1:{port}/metrics"
        if not line:
            raise RuntimeError("serve did not start")


FAILED = {"scrapes": 0}


def offer(rate: int, seconds: float) -> int:
    """getpid() calls making `rate` synthetic events/s (BATCH per call),
    sleeping between ticks of 50 ms (bench_record busy-waits for precision;
    a long storm should leave the core to others)."""
    per_tick = max(1, int(rate * 0.05 / BATCH))
    start, calls = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        for _ in range(per_tick):
            os.getpid()
        calls += per_tick
        due = start + calls * BATCH / rate
        time.sleep(max(0.0, due - time.monotonic()))
    return calls * BATCH


def _scrape(url: str) -> float:
    """Seconds for one scrape. A lab elsewhere on the host can shrink tcp_mem
    for a moment and loopback connections get reset: counted, retried."""
    for _ in range(5):
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
            return time.perf_counter() - t0
        except (ConnectionError, OSError):
            FAILED["scrapes"] += 1
            time.sleep(0.5)
    raise RuntimeError("5 scrapes in a row failed")


def _stop(p) -> None:
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=90)


def idle(seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="tcpoom-bench-") as state:
        p, url = _start(state)
        time.sleep(5)
        cpu0, t0, rss0 = _cpu_seconds(p.pid), time.monotonic(), _rss_mb(p.pid)
        samples = []
        while time.monotonic() - t0 < seconds:
            _scrape(url)
            samples.append(round(_rss_mb(p.pid), 1))
            time.sleep(15)
        cpu, wall = _cpu_seconds(p.pid) - cpu0, time.monotonic() - t0
        rss1 = _rss_mb(p.pid)
        _stop(p)
    return {"seconds": round(wall, 1), "cpu_s": round(cpu, 2), "cpu_percent_of_core": round(100 * cpu / wall, 3),
            "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss1, 1), "rss_mb_max": max(samples),
            "scrapes": len(samples)}


def scrape_latency(extra_netns: int, n: int = 200) -> dict:
    from scripts.lab import hostlock
    hostlock.acquire()          # a quiet host: no lab changes tcp_mem meanwhile
    try:
        return _scrape_latency(extra_netns, n)
    finally:
        hostlock.release()


def _scrape_latency(extra_netns: int, n: int) -> dict:
    names = [f"tcpoom-bench-{os.getpid()}-{i}" for i in range(extra_netns)]
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with tempfile.TemporaryDirectory(prefix="tcpoom-bench-") as state:
            p, url = _start(state, "--max-netns", str(extra_netns + 1))
            time.sleep(2)
            _scrape(url)
            lat = sorted(_scrape(url) for _ in range(n))
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
            _stop(p)
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)
    return {"netns_read": extra_netns + 1, "series": series, "scrapes": n,
            "median_ms": round(1000 * statistics.median(lat), 2),
            "p95_ms": round(1000 * lat[int(0.95 * n) - 1], 2), "max_ms": round(1000 * lat[-1], 2)}


def scrape_cgroups(n_cgroups: int, with_sockets: int, n: int = 200) -> dict:
    from scripts.lab import hostlock
    hostlock.acquire()
    try:
        return _scrape_cgroups(n_cgroups, with_sockets, n)
    finally:
        hostlock.release()


def _join(dirs, pid: int) -> None:
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))


@contextlib.contextmanager
def bench_cgroups(n_cgroups: int, with_sockets: int):
    """n_cgroups real cgroups in every hierarchy mounted, the first
    with_sockets of them holding a loopback connection against a small socket
    memory limit; all removed on exit. Yields {"made_s": ..., "roots": ...}."""
    from scripts.lab import cgroups as labcg, sockets
    from tracer.host import cgroups as cg
    mounts = cg.read_mounts()
    roots = [r for r in (mounts.v2, mounts.v1_memory) if r]
    base = f"tcpoom-bench-{os.getpid()}.slice"
    made = [[os.path.join(r, base, f"bench-{i}.service") for r in roots] for i in range(n_cgroups)]
    v2_home, mem_home = cg.of_pid(os.getpid())
    home = [os.path.join(mounts.v2, (v2_home or "/").lstrip("/"))] if mounts.v2 else []
    if mounts.v1_memory:
        home.append(os.path.join(mounts.v1_memory, (mem_home or "/").lstrip("/")))
    held, servers = [], []
    try:
        t0 = time.monotonic()
        for dirs in made:
            for d in dirs:
                os.makedirs(d)
        info = {"made_s": round(time.monotonic() - t0, 2), "roots": roots}
        memory_dir = mounts.memory_root
        v1 = memory_dir == mounts.v1_memory
        for dirs in made[:with_sockets]:
            mdir = next(d for d in dirs if d.startswith(memory_dir + "/"))
            # v1: the tcp limit also turns socket accounting on for the cgroup
            limit = "memory.kmem.tcp.limit_in_bytes" if v1 else "memory.max"
            with open(os.path.join(mdir, limit), "w") as f:
                f.write(str(64 << 10 if v1 else 64 << 20))
            # a socket is charged to the memcg of the task that made (or accepted) it
            _join(dirs, os.getpid())
            # a reader with a large receive buffer it never drains: its charges
            # pass the cgroup's limit and are refused (class memcg)
            server, pairs = sockets.open_pairs(1, rcvbuf=4 << 20, force_rcvbuf=True)
            servers.append(server)
            held.extend(pairs)
            for client, _ in pairs:
                sockets.send_until_full(client, 1 << 20, chunk=4096)
        _join(home, os.getpid())
        yield info
    finally:
        _join(home, os.getpid())
        sockets.close_all(held)
        for s in servers:
            s.close()
        for root in roots:
            top = os.path.join(root, base)
            for d, _, _ in sorted(os.walk(top), key=lambda x: -x[0].count("/")):
                labcg.rmdir_patiently(d)
        left = [os.path.join(r, base) for r in roots if os.path.exists(os.path.join(r, base))]
        if left:
            print(f"bench_serve: could not remove {left}", file=sys.stderr)


def _scrape_cgroups(n_cgroups: int, with_sockets: int, n: int) -> dict:
    with bench_cgroups(n_cgroups, with_sockets) as info:
        with tempfile.TemporaryDirectory(prefix="tcpoom-bench-") as state:
            p, url = _start(state)
            time.sleep(3)
            _scrape(url)
            lat = sorted(_scrape(url) for _ in range(n))
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            _stop(p)
    lines = text.splitlines()
    series = sum(1 for ln in lines if ln and not ln.startswith("#"))
    cg_series = {name: sum(1 for ln in lines if ln.startswith(name + "{"))
                 for name in ("tcpoom_cgroup_events_total", "tcpoom_cgroup_socket_memory_bytes",
                              "tcpoom_cgroup_socket_memory_headroom_bytes")}
    other = sum(float(ln.rsplit(" ", 1)[1]) for ln in lines
                if ln.startswith('tcpoom_cgroup_events_total{cgroup="other"'))
    walk = [float(ln.split()[1]) for ln in lines if ln.startswith("tcpoom_cgroup_walk_seconds ")]
    return {"cgroups": n_cgroups, "hierarchies": info["roots"], "cgroups_with_sockets": with_sockets,
            "made_s": info["made_s"], "series": series, "cgroup_series": cg_series,
            "events_in_other": int(other), "walk_s": round(walk[0], 4) if walk else None, "scrapes": n,
            "median_ms": round(1000 * statistics.median(lat), 2),
            "p95_ms": round(1000 * lat[int(0.95 * n) - 1], 2), "max_ms": round(1000 * lat[-1], 2)}


def storm(seconds: float, rate: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="tcpoom-bench-") as state:
        p, url = _start(state, "--family", "oom_check", "--synthetic-pid", str(os.getpid()),
                        "--ring-size", "64M", "--no-reports", "--trigger", "sigusr1")
        time.sleep(2)
        cpu0, t0 = _cpu_seconds(p.pid), time.monotonic()
        rss, offered = [], 0
        next_sample = t0
        while time.monotonic() - t0 < seconds:
            offered += offer(rate, 1.0)
            if time.monotonic() >= next_sample:
                rss.append(round(_rss_mb(p.pid), 1))
                next_sample += 10
                _scrape(url)
        time.sleep(1)
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        cpu, wall = _cpu_seconds(p.pid) - cpu0, time.monotonic() - t0
        lost = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                   if ln.startswith("tcpoom_ring_lost_events_total"))
        received = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                       if ln.startswith("tcpoom_events_received_total"))
        _stop(p)
    return {"seconds": round(wall, 1), "rate": rate, "offered": offered, "received": int(received),
            "lost": int(lost), "cpu_percent_of_core": round(100 * cpu / wall, 1),
            "rss_mb_first": rss[0], "rss_mb_last": rss[-1], "rss_mb_max": max(rss), "rss_mb_samples": rss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle-seconds", type=float, default=600)
    ap.add_argument("--storm-seconds", type=float, default=300)
    ap.add_argument("--storm-rate", type=int, default=20000)
    ap.add_argument("--netns", type=int, default=31)
    ap.add_argument("--cgroups", type=int, default=1000)
    ap.add_argument("--cgroups-with-sockets", type=int, default=48)
    ap.add_argument("-o", "--output")
    ap.add_argument("--only", choices=("idle", "scrape", "cgroups", "storm"))
    args = ap.parse_args()
    out = {"kernel": os.uname().release, "cpus": os.cpu_count(),
           "command": " ".join(["python3 -m scripts.bench_serve"] + sys.argv[1:])}
    if args.only in (None, "scrape"):
        out["scrape_host_only"] = scrape_latency(0)
        out["scrape"] = scrape_latency(args.netns)
        print(json.dumps({"scrape": out["scrape"], "scrape_host_only": out["scrape_host_only"]}), flush=True)
    if args.only in (None, "cgroups"):
        out["scrape_cgroups"] = scrape_cgroups(args.cgroups, args.cgroups_with_sockets)
        print(json.dumps({"scrape_cgroups": out["scrape_cgroups"]}), flush=True)
    if args.only in (None, "storm"):
        out["storm"] = storm(args.storm_seconds, args.storm_rate)
        print(json.dumps({"storm": out["storm"]}), flush=True)
    if args.only in (None, "idle"):
        out["idle"] = idle(args.idle_seconds)
        print(json.dumps({"idle": out["idle"]}), flush=True)
    out["failed_scrapes_retried"] = FAILED["scrapes"]
    if args.output:
        with open(args.output, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
