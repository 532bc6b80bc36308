"""A long event storm through `tcpoom live`: is its memory flat?

    python3 -m scripts.bench_live_storm [--minutes 10] [--rate 200000]

Drives the synthetic source (1000 records per getpid() of this process) at
--rate events/s for --minutes, with `tcpoom live --no-screen` consuming them
(the same state and aggregation as the full screen, which it also renders
every 10 s to exercise the drawing), and samples the tracer's RSS every 10 s.
Needs root.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 1000


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=200_000)
    args = ap.parse_args()
    p = subprocess.Popen([sys.executable, "-m", "tracer", "live", "--no-screen", "--interval", "10",
                          "--family", "oom_check", "--synthetic-pid", str(os.getpid())],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not p.stderr.readline().startswith("tcpoom: live"):
        if p.poll() is not None:
            print(p.stderr.read())
            return 1
    start = time.monotonic()
    end = start + args.minutes * 60
    next_sample = start
    samples = []
    i = 0
    while time.monotonic() < end:
        due = start + i * BATCH / args.rate
        now = time.monotonic()
        if now < due:
            time.sleep(min(due - now, 0.001))
            continue
        os.getpid()
        i += 1
        if now >= next_sample:
            next_sample += 10
            samples.append((now - start, rss_mb(p.pid)))
            print(f"{samples[-1][0]:6.0f} s  {i * BATCH:>12,} events  RSS {samples[-1][1]:.1f} MB", flush=True)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    print(out.strip().splitlines()[-8:] and "\n".join(out.strip().splitlines()[-8:]))
    first = [r for t, r in samples if t >= 30][:1] or [samples[0][1]]
    print(f"RSS after 30 s: {first[0]:.1f} MB; at the end: {samples[-1][1]:.1f} MB; "
          f"max {max(r for _, r in samples):.1f} MB over {len(samples)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
