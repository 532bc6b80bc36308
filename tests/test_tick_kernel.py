"""`live --record` and `record` run on one tick (tracer/capture/tick.py), so
they write the same kinds of blocks: loss blocks when the ring overflows,
snapshots right after orphan kills where the kernel side cannot read the
orphan count, and the holders while TCP is under memory pressure."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from scripts.lab import Lab

pytestmark = pytest.mark.kernel

#: the smallest ring: a burst of the synthetic source (1000 records a getpid())
#: overflows it, so both recordings must say what they lost
SMALL_RING = "4096"


def start(args, ready):
    p = subprocess.Popen([sys.executable, "-m", "tracer", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if line.startswith(ready):
            return p
        if not line and p.poll() is not None:
            break
    p.kill()
    raise RuntimeError(f"{args[0]} did not start: " + p.communicate()[1])


def kinds(path):
    """The kinds of block `tcpoom parse` lists, a light snapshot apart."""
    r = subprocess.run([sys.executable, "-m", "tracer", "parse", path], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    found = set()
    for line in r.stdout.splitlines():
        m = re.match(r"block \d+ @ \d+: (\w+)", line)
        if m:
            found.add("light snapshot" if m.group(1) == "snapshot" and '"light": true' in line
                      else m.group(1))
    return found


def test_live_record_and_record_write_the_same_kinds_of_blocks(tmp_path):
    rec_path, live_path = str(tmp_path / "record.tcpoom"), str(tmp_path / "live.tcpoom")
    common = ["--ringbuf-size", SMALL_RING, "--synthetic-pid", str(os.getpid())]
    with Lab(allow_global_sysctls=True) as lab:
        procs = [start(["record", "-o", rec_path, *common], "tcpoom: recording"),
                 start(["live", "--record", live_path, "--no-screen", "--interval", "60", *common],
                       "tcpoom: live summaries")]
        try:
            lab.run("orphans_close")       # orphan kills: sampled orphan counts on this kernel
            lab.run("tcp_mem_send")        # about a second of memory pressure: the holders
            for _ in range(5):
                os.getpid()                # 1000 synthetic records each: the small ring overflows
                time.sleep(0.01)
            time.sleep(1.5)                # a tick after the losses
        finally:
            for p in procs:
                p.send_signal(signal.SIGINT)
            outs = [p.communicate(timeout=30) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    recorded, watched = kinds(rec_path), kinds(live_path)
    assert {"header", "events", "snapshot", "light snapshot", "counters", "loss",
            "holders", "trailer"} <= recorded, recorded
    assert watched == recorded
