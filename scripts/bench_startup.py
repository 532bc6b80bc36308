"""Start-up to attached, and memory, of `tcpoom trace` (medians of N runs).

    python3 -m scripts.bench_startup [--runs 7]

Start-up is measured from exec to the "tcpoom: tracing" line on stderr, which
is printed once every program is attached. RSS is VmRSS and VmHWM of the
tracer after one second attached, idle.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0
    return out


def one_run(no_site: bool = False, no_preload: bool = False) -> tuple:
    """no_site: without the interpreter's site module (python -S, site-packages
    on PYTHONPATH): what start-up costs where no .pth file runs code at every
    interpreter start (this sandbox's imports certifi: ~45 ms).
    no_preload: the object loaded after click, not meanwhile (tracer/kernel/preload.py)."""
    argv, env = [sys.executable, "-m", "tracer", "trace", "--duration", "30"], dict(os.environ)
    if no_site:
        import sysconfig
        argv.insert(1, "-S")
        env["PYTHONPATH"] = os.pathsep.join([ROOT, sysconfig.get_paths()["purelib"]])
    if no_preload:
        env["TCPOOM_NO_PRELOAD"] = "1"
    t0 = time.monotonic()
    p = subprocess.Popen(argv, cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        ready, _, _ = select.select([p.stderr], [], [], 10)
        if not ready:
            p.kill()
            raise RuntimeError("tracer did not attach within 10 s")
        line = p.stderr.readline()
        if line.startswith("tcpoom: tracing"):
            attached = time.monotonic() - t0
            break
        if not line:
            raise RuntimeError("tracer exited before attaching")
    time.sleep(1.0)
    mem = _status(p.pid)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=20)
    return attached, mem["VmRSS"], mem["VmHWM"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    start = statistics.median(r[0] for r in runs) * 1000
    rss = statistics.median(r[1] for r in runs)
    hwm = statistics.median(r[2] for r in runs)
    print(f"start-up to attached: median {start:.0f} ms (min {min(r[0] for r in runs)*1000:.0f}, "
          f"max {max(r[0] for r in runs)*1000:.0f}) over {args.runs} runs")
    print(f"RSS attached, idle: median {rss:.1f} MB, peak (VmHWM) {hwm:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
