"""Regenerate tests/data/sample.tcpoom: a short real recording of three lab
scenarios (TIME_WAIT overflow, orphan aborts on close, receive-side tcp_mem
refusals), filtered on the lab's namespace. The golden report texts in
tests/data/ are made from it; regenerate them together:

    python3 -m scripts.make_sample_trace && python3 -m pytest tests/test_report.py --regen-golden
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from scripts.lab import Lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "sample.tcpoom")


def main() -> int:
    with Lab(allow_global_sysctls=True) as lab:
        rec = subprocess.Popen([sys.executable, "-m", "tracer", "record", "-o", OUT, "--force", "--compress",
                                "--netns", lab.netns_name], cwd=ROOT)
        time.sleep(1.5)
        for scenario, count in (("tw_overflow", 60), ("orphans_close", 40), ("tcp_mem_recv", 10)):
            lab.run(scenario, count=count)
            time.sleep(1.1)
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=30)
    return rec.returncode


if __name__ == "__main__":
    sys.exit(main())
