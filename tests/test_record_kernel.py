"""Record each lab scenario for real, report it without the kernel, and check
the report against the kernel's own counters; a recording killed with SIGKILL
still reads back and reports."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from matrix_results import plan_of_report
from scripts.lab import Lab

pytestmark = pytest.mark.kernel

#: scenario -> (finding id the diagnosis must give, family, TcpExt counter)
CASES = {
    "tw_overflow": ("tw_overflow", "tw_overflow", "TCPTimeWaitOverflow"),
    "orphans_close": ("orphans", "oom_check", "TCPAbortOnMemory"),
    "orphans_timer": ("orphans", "oom_check", "TCPAbortOnMemory"),
    "tcp_mem_send": ("tcp_mem", "mem_exceed", None),
    "tcp_mem_recv": ("tcp_mem", "mem_exceed", None),
    "orphans_tcp_mem": ("tcp_mem", "oom_check", "TCPAbortOnMemory"),
}


def start_recorder(path, *args):
    p = subprocess.Popen([sys.executable, "-m", "tracer", "record", "-o", path, *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if line.startswith("tcpoom: recording"):
            return p
        if not line and p.poll() is not None:
            break
    p.kill()
    raise RuntimeError("recorder did not start: " + p.communicate()[1])


def report_json(*paths):
    r = subprocess.run([sys.executable, "-m", "tracer", "report", "--format", "json", *paths],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    return r, (json.loads(r.stdout)["hosts"] if r.stdout.strip() else None)


@pytest.mark.parametrize("scenario", list(CASES))
def test_round_trip_names_the_limit_and_matches_the_kernel(tmp_path, scenario, matrix):
    finding, family, counter = CASES[scenario]
    path = str(tmp_path / f"{scenario}.tcpoom")
    with Lab(allow_global_sysctls=True) as lab:
        rec = start_recorder(path, "--netns", lab.netns_name)
        result = lab.run(scenario)
        time.sleep(1.2)                 # one more snapshot after the workload
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=30)
    assert rec.returncode == 0, err
    assert "recorded" in err and "lost 0" in err
    assert os.stat(path).st_mode & 0o777 == 0o600
    r, hosts = report_json(path)
    assert r.returncode == 0, r.stderr
    m = hosts[0]
    assert finding in [f["id"] for f in m["diagnosis"]]
    got = m["events"]["by_family"].get(family, 0)
    assert got > 0
    if counter:
        assert got == result.deltas[counter]
        assert m["kernel_counters"]["comparison"][family]["kernel_delta"] == result.deltas[counter]
    if family == "mem_exceed":
        assert m["peaks"]["memory_pages"]["value"] > 0
        assert any(c["limit"].startswith("tcp_mem hard limit") for c in m["crossed"])
    if counter:
        matrix.check(plan_of_report(m), family,
                     f"{scenario} recorded, reported without the kernel: events = TcpExt {counter}, "
                     f"finding {finding}", fields=["verdict"], figures=f"{got}/{result.deltas[counter]}")
    else:
        matrix.check(plan_of_report(m), family,
                     f"{scenario} recorded, reported without the kernel: events seen, finding {finding}, "
                     f"the tcp_mem hard limit crossed", figures=f"{got} events")


def test_sigkill_recording_reads_back_and_reports(tmp_path, matrix):
    path = str(tmp_path / "killed.tcpoom")
    with Lab(allow_global_sysctls=True) as lab:
        rec = start_recorder(path, "--netns", lab.netns_name)
        result = lab.run("tw_overflow")
        time.sleep(1.5)                 # the recorder writes at least once a second
        rec.send_signal(signal.SIGKILL)
        rec.communicate(timeout=30)
    r, hosts = report_json(path)
    # no trailer: complete blocks only, reported; exit 0 when no block was torn
    assert r.returncode in (0, 5), r.stderr
    assert "Traceback" not in r.stderr
    m = hosts[0]
    assert m["source"]["complete"] is False
    assert m["events"]["by_family"]["tw_overflow"] == result.deltas["TCPTimeWaitOverflow"]
    matrix.check(plan_of_report(m), "tw_overflow",
                 "tw_overflow recorded, the recorder SIGKILLed: its complete blocks report "
                 "events = TcpExt TCPTimeWaitOverflow", fields=["verdict"],
                 figures=f"{result.deltas['TCPTimeWaitOverflow']}")
