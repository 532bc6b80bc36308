"""The main job, with something to see: `tcpoom trace` live in this terminal
while the pressure lab produces each condition for real in a private network
namespace (TIME_WAIT overflow, orphan aborts on the close and timer paths,
tcp_mem refusals on the send and receive sides). The tracer is filtered on the
lab's namespace, so its totals compare with that namespace's TcpExt counters.

    python3 -m scripts.demo [--json] [SCENARIO ...]

Needs root. Global sysctls (tcp_max_orphans, tcp_mem) are changed for seconds
at most and restored; the namespace is deleted at the end.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from scripts.lab import SCENARIOS, Lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--json", action="store_true", help="tcpoom trace --json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: needs root (namespaces, sysctls, BPF)", file=sys.stderr)
        return 77
    with Lab(allow_global_sysctls=True) as lab:
        cmd = [sys.executable, "-m", "tracer", "trace", "--netns", lab.netns_name]
        if args.json:
            cmd.append("--json")
        tracer = subprocess.Popen(cmd, cwd=ROOT)
        try:
            time.sleep(1.0)         # attached well within this
            for name in args.scenarios:
                print(f"\n=== lab: {name}: {SCENARIOS[name].description}", file=sys.stderr, flush=True)
                result = lab.run(name)
                moved = ", ".join(f"{k} +{v}" for k, v in result.deltas.items() if v) or "no counter moved"
                print(f"=== lab: {name} done in {result.duration_s:.1f} s: {moved}", file=sys.stderr, flush=True)
                time.sleep(0.5)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
    return tracer.returncode


if __name__ == "__main__":
    sys.exit(main())
