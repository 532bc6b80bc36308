"""`tcpoom trace` against real kernel events: each lab scenario is produced for
real on this kernel, and what the tracer saw must equal the kernel's counters.
One scenario at a time; each Lab restores its sysctls and deletes its netns."""
import json
import os
import signal
import subprocess
import sys

import pytest

from bpf_programs import gone, program_ids
from conftest import ROOT
from scripts.counts_check import Tracer, run_once

pytestmark = pytest.mark.kernel


def row(r, family=None):
    """The totals row of the scenario's family: the method the tracer used."""
    family = family or r["family"]
    return next(x for x in r["totals"]["families"] if x["family"] == family)


def test_tw_overflow_every_event_and_exact_count(matrix, probes_plan):
    r = run_once("tw_overflow")
    assert r["returncode"] == 0, r["stderr"]
    assert r["lab_delta"] > 0
    assert r["seen"] == r["kernel_delta"] == r["lab_delta"]
    assert r["printed"] == r["seen"] and r["lost"] == 0
    e = r["events"][0]
    assert e["tw_count"] >= e["max_tw_buckets"] and e["fidelity"]["tw_count"] == "exact"
    assert sum(r["kmsg_lines"].values()) == 0     # the kernel says nothing about these
    matrix.check(probes_plan, "tw_overflow",
                 "tw_overflow: count = TcpExt TCPTimeWaitOverflow, every event printed, none lost; "
                 "tw_count >= max_tw_buckets (first event), tw_count said exact; the kernel logs none",
                 fields=["verdict", "tw_count", "max_tw_buckets"], used=row(r)["method"],
                 figures=f"{r['seen']}/{r['kernel_delta']}")


def test_orphans_close_path_exact_and_more_than_the_kernel_log(matrix, probes_plan):
    r = run_once("orphans_close")
    assert r["returncode"] == 0, r["stderr"]
    assert r["lab_delta"] > 0
    assert r["seen"] == r["kernel_delta"] == r["lab_delta"]
    assert r["printed"] == r["seen"] and r["lost"] == 0
    assert r["printed"] > sum(r["kmsg_lines"].values())
    # The orphan cache's timer is deferrable and can run late on an idle CPU: the lab then
    # closes clients one at a time until a close is aborted, and those closed before that
    # die later on their own timers (scripts/lab/orphans.py). Every other kill is a close.
    slipped = r["details"]["closed_before_cache_hot"]
    close = [e for e in r["events"] if e["caller"] == "close"]
    assert len(close) >= r["lab_delta"] - slipped
    for e in r["events"]:
        assert e["caller"] in ("close", "timer")
        assert (e["shift"] == 0) if e["caller"] == "close" else (e["shift"] >= 0)
        assert "too_many_orphans" in e["verdict"]
        assert e["memory_allocated"] is not None and e["tcp_mem"] is not None
    matrix.check(probes_plan, "oom_check",
                 "orphans_close: count = TcpExt TCPAbortOnMemory, every event printed, none lost, "
                 "more than the kernel log's lines; every event on the close path with shift 0 "
                 "but those closed before the orphan cache held the seed (their timers kill them), "
                 "verdict too_many_orphans; memory_allocated and tcp_mem present",
                 fields=["verdict", "caller", "shift"], used=row(r)["method"],
                 figures=f"{r['seen']}/{r['kernel_delta']}, {len(close)} on the close path, "
                         f"{slipped} closed before the cache was hot, "
                         f"kernel log {sum(r['kmsg_lines'].values())} lines")


def test_orphans_timer_path_shows_the_shift_penalty(matrix, probes_plan):
    r = run_once("orphans_timer")
    assert r["returncode"] == 0, r["stderr"]
    assert r["lab_delta"] > 0
    assert r["seen"] == r["kernel_delta"] == r["lab_delta"]
    timer = [e for e in r["events"] if e["caller"] == "timer"]
    assert timer and all(e["shift"] >= 1 for e in timer)
    matrix.check(probes_plan, "oom_check",
                 "orphans_timer: count = TcpExt TCPAbortOnMemory; timer-path events have shift >= 1",
                 fields=["verdict", "caller", "shift"], used=row(r)["method"],
                 figures=f"{r['seen']}/{r['kernel_delta']}, {len(timer)} on the timer path, shifts "
                         f"{sorted({e['shift'] for e in timer})}")


@pytest.mark.parametrize("scenario,side", [("tcp_mem_send", "send"), ("tcp_mem_recv", "recv")])
def test_tcp_mem_refusals_carry_allocated_above_the_hard_limit(scenario, side, matrix, probes_plan):
    r = run_once(scenario)
    assert r["returncode"] == 0, r["stderr"]
    assert r["seen"] > 0 and r["printed"] == r["seen"] and r["lost"] == 0
    sides = {e["verdict"][0] for e in r["events"]}
    assert side in sides
    # A refusal is not only at the hard limit: under global pressure
    # __sk_mem_raise_allocated() also refuses a socket above its fair share
    # (tcp_mem[2] / sockets) while the total is still under tcp_mem[2]; below
    # tcp_mem[0] it always grants. The lab drives the total past tcp_mem[2].
    for e in r["events"]:
        assert e["memory_allocated"] > e["tcp_mem"][0]
    assert any(e["memory_allocated"] > e["tcp_mem"][2] for e in r["events"])
    # entering pressure: sampled from /proc/net/protocols, against TCPMemoryPressures
    pressure = next(row for row in r["totals"]["families"] if row["family"] == "pressure")
    assert pressure["kernel_delta"] >= 1 and pressure["seen"] == pressure["kernel_delta"]
    matrix.check(probes_plan, "mem_exceed",
                 f"{scenario}: refusals on the {side} side seen, every event printed, none lost "
                 f"(no TcpExt counter to compare); memory_allocated > tcp_mem[0] on every event, "
                 f"> tcp_mem[2] on some",
                 fields=["verdict", "memory_allocated", "tcp_mem"], used=row(r)["method"],
                 figures=f"{r['seen']} seen")
    matrix.check(probes_plan, "pressure", f"{scenario}: entries = TcpExt TCPMemoryPressures",
                 fields=["verdict"], used=pressure["method"],
                 figures=f"{pressure['seen']}/{pressure['kernel_delta']}")


def _our_program_ids():
    return program_ids({"send_reset_btf", "set_state_btf", "state_cast_btf", "exceed_btf", "tw_reset_btf",
                        "tw_destroy_btf", "tw_settle_run", "drop_btf", "drop3_btf", "drop_note_btf"})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_nothing_stays_attached_after_exit(sig):
    before = _our_program_ids()          # another tracer may be running: track ids
    t = Tracer([])
    mine = _our_program_ids() - before
    assert mine
    t.proc.send_signal(sig)
    t.proc.communicate(timeout=20)
    assert gone(mine)


def test_trace_stops_on_count_and_duration():
    out = subprocess.run([sys.executable, "-m", "tracer", "trace", "--json", "--duration", "0.5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    totals = json.loads(out.stdout.splitlines()[-1])
    assert totals["type"] == "totals" and totals["stop_reason"] == "duration"


@pytest.mark.skipif(not os.path.exists("/proc/sys/net/ipv4/tcp_rto_max_ms"),
                    reason="needs net.ipv4.tcp_rto_max_ms (6.18+) to reach the backed-off window quickly")
def test_timer_path_shift_is_exact_while_the_backed_off_rto_is_below_rto_max(matrix, probes_plan):
    """tcp_write_timeout's `alive` is icsk_rto < rto_max, icsk_rto already backed
    off: at the third round (0.8 s < 1 s) do_reset is true and the shift exact.
    Recomputing with icsk_rto << icsk_backoff flagged every one of them as a
    lower bound (issue 13, finding 5)."""
    r = run_once("orphans_timer_backoff")
    assert r["returncode"] == 0, r["stderr"]
    assert r["lab_delta"] > 0 and r["seen"] == r["kernel_delta"] == r["lab_delta"]
    timer = [e for e in r["events"] if e["caller"] == "timer"]
    assert len(timer) == r["seen"]
    assert all(e["shift"] == 1 and not e["shift_is_lower_bound"] for e in timer), \
        sorted({(e["shift"], e["shift_is_lower_bound"]) for e in timer})
    matrix.check(probes_plan, "oom_check",
                 "orphans_timer_backoff: count = TcpExt TCPAbortOnMemory; killed at the third "
                 "retransmission (RTO backed off, below rto_max): shift 1, not a lower bound",
                 fields=["verdict", "caller", "shift"], used=row(r)["method"],
                 figures=f"{r['seen']}/{r['kernel_delta']}, {len(timer)} exact")
