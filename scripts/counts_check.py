"""Run `tcpoom trace` (black box, as a user would) during a lab scenario and
compare what it saw with the kernel's own counters.

Used by tests/test_trace_kernel.py (one run per scenario) and, for the
"20 consecutive runs" figure, from the command line:

    python3 -m scripts.counts_check --runs 20 [SCENARIO ...]

--tracer names another tcpoom to run, e.g. an installed one (`--tracer tcpoom`)
or the zipapp (`--tracer "python3 dist/tcpoom.pyz"`): tests/test_install_kernel.py.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from scripts.lab import Lab
from tracer.model.families import summed_delta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: scenario -> (family, TcpExt counter that counts it, or None)
SCENARIO_FAMILY = {
    "tw_overflow": ("tw_overflow", "TCPTimeWaitOverflow"),
    "tw_linger0": ("tw_overflow", "TCPTimeWaitOverflow"),
    "tw_late_data": ("tw_overflow", "TCPTimeWaitOverflow"),
    "tw_ipv6": ("tw_overflow", "TCPTimeWaitOverflow"),
    "tw_two_netns": ("tw_overflow", "TCPTimeWaitOverflow"),
    "tw_two_cpus": ("tw_overflow", "TCPTimeWaitOverflow"),
    "orphans_close": ("oom_check", "TCPAbortOnMemory"),
    "orphans_timer": ("oom_check", "TCPAbortOnMemory"),
    "orphans_timer_backoff": ("oom_check", "TCPAbortOnMemory"),
    "tcp_mem_send": ("mem_exceed", None),
    "tcp_mem_recv": ("mem_exceed", None),
    "memcg_beside_tcp_mem": ("mem_exceed", None),
    "rcvbuf_drops": ("mem_drop", "TCPRcvQDrop+TCPOFODrop+TCPBacklogDrop"),
    "tcp_mem_drops": ("mem_drop", "TCPRcvQDrop+TCPOFODrop+TCPBacklogDrop"),
}


class Tracer:
    """`python3 -m tracer trace --json ...` (or `command trace ...`) in a subprocess."""

    # command is keyword-only: scripts/vm/guest_checks.py raises the last
    # positional default (the start timeout) for slow guests
    def __init__(self, args: List[str], timeout: float = 60.0, *, command: Optional[List[str]] = None):
        command = command or [sys.executable, "-m", "tracer"]
        self.proc = subprocess.Popen(
            [*command, "trace", "--json", *args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        self.start_line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if ready:
                line = self.proc.stderr.readline()
                if line.startswith("tcpoom: tracing"):
                    self.start_line = line
                    self._start_reader()
                    return
                if not line and self.proc.poll() is not None:
                    break
        self.proc.kill()
        out, err = self.proc.communicate()
        raise RuntimeError(f"tracer did not start: {err.strip() or out.strip()}")

    def _start_reader(self) -> None:
        # read stdout while the scenario runs: a full pipe would stall the tracer
        self._chunks: List[str] = []
        self._reader = threading.Thread(target=lambda: self._chunks.append(self.proc.stdout.read()),
                                        daemon=True)
        self._reader.start()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> Dict:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        err = self.proc.stderr.read()
        out = "".join(self._chunks)
        lines = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
        events = [x for x in lines if "family" in x and x.get("type") != "totals"]
        totals = next((x for x in lines if x.get("type") == "totals"), None)
        return {"events": events, "totals": totals, "returncode": self.proc.returncode, "stderr": err}


def run_once(scenario: str, count: Optional[int] = None, command: Optional[List[str]] = None) -> Dict:
    """One scenario under the tracer, filtered on the lab's namespace."""
    family, counter = SCENARIO_FAMILY[scenario]
    with Lab(allow_global_sysctls=True) as lab:
        tracer = Tracer(["--netns", lab.netns_name], command=command)
        try:
            result = lab.run(scenario, count=count)
            time.sleep(0.3)      # let the last events reach the ring buffer
        finally:
            got = tracer.stop()
    totals = got["totals"] or {}
    row = next((r for r in totals.get("families", []) if r["family"] == family), {})
    fam_events = [e for e in got["events"] if e["family"] == family]
    return {
        "scenario": scenario, "family": family, "counter": counter,
        "lab_delta": summed_delta(counter, result.deltas.get) if counter else None,
        "seen": row.get("seen"), "kernel_delta": row.get("kernel_delta"),
        "printed": len(fam_events), "lost": row.get("lost"),
        "kmsg_lines": result.kmsg_lines, "events": fam_events, "totals": totals,
        "returncode": got["returncode"], "stderr": got["stderr"],
        "details": result.details,
        # pressure enters and leaves seen beside the scenario's own family
        "pressure_verdicts": [e["verdict"] for e in got["events"] if e["family"] == "pressure"],
    }


def exact(r: Dict, counter: Optional[str]) -> bool:
    """One run counted exactly: the tracer exited 0, lost nothing, printed
    every event it counted, and counted what the namespace's TcpExt `counter`
    counted (a family without one: saw some). Also scripts/vm_exact.py's test."""
    if r["returncode"] != 0 or r["lost"] != 0 or r["printed"] != r["seen"]:
        return False
    if counter is None:
        return (r["seen"] or 0) > 0
    return r["seen"] == r["kernel_delta"] == r["lab_delta"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIO_FAMILY))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--tracer", default=None, help="the tcpoom command to run (default: python3 -m tracer)")
    args = ap.parse_args()
    command = shlex.split(args.tracer) if args.tracer else None
    bad = 0
    for scenario in args.scenarios:
        ok = 0
        figures = []
        for _ in range(args.runs):
            r = run_once(scenario, command=command)
            ok += exact(r, r["counter"])
            figures.append(f"{r['seen']}/{r['kernel_delta']}")
        bad += ok != args.runs
        print(f"{scenario:<14} {ok}/{args.runs} runs exact   seen/kernel: {' '.join(figures)}", flush=True)
        if ok != args.runs and r["returncode"] != 0:
            print(r["stderr"].strip(), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
