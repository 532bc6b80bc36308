"""The main job, with something to see: `tcpoom live` (the full-screen
dashboard; `tcpoom trace` lines when not on a terminal, or with --lines) while
the pressure lab produces each condition for real in a private network
namespace (TIME_WAIT overflow, orphan aborts on the close and timer paths,
tcp_mem refusals on the send and receive sides). The tracer is filtered on the
lab's namespace, so its totals compare with that namespace's TcpExt counters.

    python3 -m scripts.demo [--lines] [--json] [SCENARIO ...]

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
    ap.add_argument("--lines", action="store_true", help="tcpoom trace lines instead of the dashboard")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: needs root (namespaces, sysctls, BPF)", file=sys.stderr)
        return 77
    with Lab(allow_global_sysctls=True) as lab:
        dashboard = sys.stdout.isatty() and not (args.lines or args.json)
        cmd = [sys.executable, "-m", "tracer", "live" if dashboard else "trace", "--netns", lab.netns_name]
        if args.json:
            cmd.append("--json")
        # the dashboard owns the screen: the lab's progress lines would tear it
        say = (lambda *a, **k: None) if dashboard else print
        tracer = subprocess.Popen(cmd, cwd=ROOT)
        try:
            time.sleep(1.0)         # attached well within this
            for name in args.scenarios:
                say(f"\n=== lab: {name}: {SCENARIOS[name].description}", file=sys.stderr, flush=True)
                result = lab.run(name)
                moved = ", ".join(f"{k} +{v}" for k, v in result.deltas.items() if v) or "no counter moved"
                say(f"=== lab: {name} done in {result.duration_s:.1f} s: {moved}", file=sys.stderr, flush=True)
                time.sleep(2.0 if dashboard else 0.5)     # time to see each one on the dashboard
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
    return tracer.returncode


if __name__ == "__main__":
    sys.exit(main())
