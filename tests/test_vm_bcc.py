"""The bcc engine against real kernel events, in a Debian 6.1 guest with the
matching linux-headers packages; and its refusal on this machine (6.18, no
headers).

One qemu guest (scripts/vm, --headers: the packages fetched once into the VM
cache, linked at /lib/modules/<release>/build) runs scripts/vm/guest_checks.py
with its bcc tier: each lab scenario under `tcpoom trace` with
TCPOOM_ENGINE=bcc, so the tracer compiles bpf/tcpoom_bcc.c with bcc at start
(clang under TCG: 75 to 95 s; the tracer starts in 85 to 100 s) and must count what the
kernel's TcpExt counters of the lab's namespace count, with the same event
fields as the CO-RE kprobe tier.
"""
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from vm_checks import check_close_path_events, check_kprobe_counts
from scripts.vm import VMError, run_in_vm
from scripts.vm.guest_checks import parse

KERNEL = "6.1"
COUNT = 100
CAPTURED = ("tw_overflow", "orphans_close", "orphans_timer")
COUNTER = {"tw_overflow": "TCPTimeWaitOverflow", "orphans_close": "TCPAbortOnMemory",
           "orphans_timer": "TCPAbortOnMemory"}
TIERS = [f"bcc:{','.join(CAPTURED)}:{COUNT}", "bcc:tcp_mem_send"]
GUEST_TIMEOUT_S = 1200.0    # four tracer starts of about 100 s each and the scenarios: ~400 s
WHERE = "Debian 6.1 under qemu (scripts/vm), linux-headers installed"


_early: dict = {}
_cancel = threading.Event()


def start_early() -> None:
    """Boot the guest in the background (conftest.py calls this once the
    suite is collected): its ~8 minutes are clang under TCG on one host core,
    which the rest of the suite need not wait for. Another kernel, so no lab
    scenario of this machine's overlaps with it."""
    if "thread" not in _early:
        _early["thread"] = threading.Thread(target=_run_guest, name="bcc-guest", daemon=True)
        _early["thread"].start()


def stop_early() -> None:
    """At the end of the session: a guest still running (its tests were not
    reached, say after -x) is killed, not left behind."""
    _cancel.set()
    if "thread" in _early:
        _early["thread"].join(30)


def _run_guest() -> None:
    started = time.monotonic()
    try:
        vm = run_in_vm([sys.executable, "-m", "scripts.vm.guest_checks", *TIERS], KERNEL,
                       cwd=ROOT, timeout=GUEST_TIMEOUT_S, headers=True, cancel=_cancel)
        r = parse(vm.output)
        r["vm"] = {"exit_code": vm.exit_code, "boot_seconds": round(vm.boot_seconds, 1),
                   "seconds": round(vm.seconds, 1)}
    except (VMError, ValueError) as e:
        _early["result"] = e
        return
    _early["result"] = r
    print(f"\n{KERNEL} bcc: guest done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    for name, s in r["tiers"].get("bcc", {}).get("scenarios", {}).items():
        print(f"  bcc {name:<14} seen {s['seen']}/{s.get('kernel_delta')} lab {s['lab_delta']} "
              f"tracer start {s.get('tracer_start_seconds')} s, {s['seconds']} s in all",
              file=sys.stderr)


@pytest.fixture(scope="module")
def guest():
    start_early()
    _early["thread"].join()
    return _early.get("result", VMError("the guest thread ended without a result"))


def result(guest):
    if isinstance(guest, Exception):
        pytest.fail(f"guest {KERNEL}: {guest}")
    assert not guest["errors"], guest["errors"]
    return guest


def plan(guest):
    return result(guest)["tiers"]["bcc"]["plan"]


def scenario(guest, name):
    s = result(guest)["tiers"]["bcc"]["scenarios"][name]
    assert s["returncode"] == 0, s["stderr"]
    return s


@pytest.mark.vm
def test_plan_is_the_bcc_engine_with_kprobes_and_exact_orphans(guest, matrix):
    r = result(guest)
    assert r["facts"]["release"].startswith("6.1.0-") and r["facts"]["headers"] is True
    p = plan(guest)
    assert p["engine"] == "bcc"
    fams = p["families"]
    assert fams["oom_check"]["method"] == "kprobe" and fams["oom_check"]["target"] == "tcp_check_oom"
    assert {"check_oom_kprobe", "check_oom_kretprobe", "tcp_close_enter_kprobe",
            "active_reset_kprobe"} <= set(fams["oom_check"]["programs"])
    assert fams["tw_overflow"]["method"] == "kprobe"
    assert fams["mem_exceed"]["method"] == "raw_tp"
    assert fams["pressure"]["method"] == "kprobe"
    for f in ("orphans", "max_orphans", "shift", "caller", "memory_allocated", "tcp_mem"):
        assert fams["oom_check"]["fields"][f]["fidelity"] == "exact", f
    assert p["config"]["orphan_cache_addr"] == r["facts"]["kallsyms_data"]["tcp_orphan_cache"]
    # BTF exists on this kernel: auto would have chosen CO-RE
    assert r["plan"]["engine"] == "co-re"
    matrix.claims(p, WHERE)


@pytest.mark.vm
@pytest.mark.parametrize("name", CAPTURED)
def test_counts_equal_the_kernel_counters(guest, name, matrix):
    """As the CO-RE kprobe tier: exact but for a call missed by kprobe nesting
    (the plan's blind spot), which must stay rare and be reported."""
    s = scenario(guest, name)
    assert s["tracer_start_seconds"] is not None
    assert s["totals"]["tcpext_delta"][COUNTER[name]] == s["lab_delta"]
    row = check_kprobe_counts(s)
    matrix.check(plan(guest), s["family"],
                 f"{name}: count = TcpExt {COUNTER[name]} in an SMP guest, "
                 f"a residue only where the kernel's own miss counts explain it; every event printed, none lost",
                 fields=["verdict"], used=row["method"], where=WHERE,
                 figures=f"{s['seen']}/{s['kernel_delta']}, {s['kernel_delta'] - s['seen']} missed")


@pytest.mark.vm
def test_timer_path_carries_the_shift_and_exact_orphans(guest, matrix):
    s = scenario(guest, "orphans_timer")
    assert s["events"]
    for e in s["events"]:
        assert e["caller"] == "timer"
        # sk_err_soft from the cut route: 1; 2 once the socket is no longer alive
        assert e["shift"] in (1, 2) and not e["shift_is_lower_bound"]
        assert e["fidelity"]["shift"] == e["fidelity"]["orphans"] == e["fidelity"]["max_orphans"] == "exact"
        assert e["orphans"] > 0 and (e["orphans"] << e["shift"]) > e["max_orphans"]
        assert "too_many_orphans" in e["verdict"]
        assert e["memory_allocated"] is not None and e["fidelity"]["memory_allocated"] == "exact"
        assert e["tcp_mem"] is not None and e["fidelity"]["tcp_mem"] == "exact"
    matrix.check(plan(guest), "oom_check",
                 "orphans_timer: every event on the timer path with shift 1..2 and "
                 "orphans << shift > max_orphans, verdict too_many_orphans (all said exact); "
                 "memory_allocated and tcp_mem present",
                 fields=["caller", "shift", "orphans", "max_orphans", "verdict"], used="kprobe",
                 where=WHERE, figures=f"{len(s['events'])} events, shifts "
                 f"{sorted({e['shift'] for e in s['events']})}")


@pytest.mark.vm
def test_close_path_has_shift_zero(guest, matrix):
    s = scenario(guest, "orphans_close")
    check_close_path_events(s["events"])
    matrix.check(plan(guest), "oom_check",
                 "orphans_close: every event on the close path with shift 0, "
                 "max_orphans 0 (tcp_max_orphans=0) and orphans >= 1, verdict too_many_orphans; "
                 "memory_allocated and tcp_mem present",
                 fields=["caller", "shift", "orphans", "max_orphans", "verdict"], used="kprobe",
                 where=WHERE, figures=f"{len(s['events'])} events")


@pytest.mark.vm
def test_tw_overflow_reads_the_death_row(guest, matrix):
    s = scenario(guest, "tw_overflow")
    assert s["events"]
    for e in s["events"]:
        assert e["tw_count"] >= e["max_tw_buckets"] == 5
        assert e["fidelity"]["tw_count"] == e["fidelity"]["verdict"] == "exact"
    matrix.check(plan(guest), "tw_overflow",
                 "tw_overflow: every event has tw_count >= max_tw_buckets = 5 (the namespace's "
                 "tcp_max_tw_buckets), both said exact",
                 fields=["tw_count", "max_tw_buckets"], used="kprobe", where=WHERE,
                 figures=f"{len(s['events'])} events")


@pytest.mark.vm
def test_refusals_and_pressure_entry_seen(guest, matrix):
    s = scenario(guest, "tcp_mem_send")
    assert s["seen"] > 0 and s["lost"] == 0 and s["printed"] == s["seen"]
    # the unread receivers are refused too (kind SK_MEM_RECV)
    assert {e["verdict"][0] for e in s["events"]} >= {"send"}
    for e in s["events"]:
        assert e["method"] == "raw_tp" and e["verdict"][0] in ("send", "recv")
        # refused at the hard limit, or above its share under pressure: the
        # figures are present either way
        assert e["memory_allocated"] > 0 and len(e["tcp_mem"]) == 3
        assert e["fidelity"]["memory_allocated"] == e["fidelity"]["tcp_mem"] == "exact"
    refused = next(x for x in s["totals"]["families"] if x["family"] == "mem_exceed")
    pressure = next(x for x in s["totals"]["families"] if x["family"] == "pressure")
    assert pressure["method"].startswith("kprobe ")
    assert pressure["kernel_delta"] >= 1 and pressure["seen"] == pressure["kernel_delta"]
    matrix.check(plan(guest), "mem_exceed",
                 "tcp_mem_send: refusals seen (send and receive side) with allocated and "
                 "tcp_mem present (said exact), none lost (no TcpExt counter to compare)",
                 fields=["memory_allocated", "tcp_mem", "verdict"], used=refused["method"],
                 where=WHERE, figures=f"{s['seen']} seen")
    matrix.check(plan(guest), "pressure", "tcp_mem_send: entries = TcpExt TCPMemoryPressures",
                 fields=["verdict"], used=pressure["method"], where=WHERE,
                 figures=f"{pressure['seen']}/{pressure['kernel_delta']}")


# ------------------------------------------------------------ this machine

def tcpoom(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.kernel
@pytest.mark.parametrize("args", [["trace", "--engine", "bcc", "--duration", "1"],
                                  ["record", "--engine", "bcc", "-o", "/dev/null", "--duration", "1"],
                                  ["probes", "--engine", "bcc"]])
def test_no_headers_here_is_one_clear_line_and_exit_3(args):
    release = os.uname().release
    assert not os.path.exists(f"/lib/modules/{release}/build")
    r = tcpoom(*args)
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"/lib/modules/{release}/build" in lines[0] and f"linux-headers-{release}" in lines[0]


@pytest.mark.kernel
def test_engine_from_the_environment_too():
    r = tcpoom("trace", "--duration", "1", env={"TCPOOM_ENGINE": "bcc"})
    assert r.returncode == 3 and "bcc engine needs the kernel headers" in r.stderr


@pytest.mark.kernel
def test_every_program_compiles_against_the_guest_headers_and_passes_this_verifier(
        guest, monkeypatch):
    """Seconds on this host, where the guest takes minutes, and a clearer
    failure: bcc compiles the text against the 6.1 headers the guest was given
    (scripts/vm fetched them before booting it: hence the `guest` fixture) and
    this kernel's verifier takes each program (one once recursed into an
    endless loop the verifier refused)."""
    from test_bcc_engine import bcc_plan
    from scripts.vm.kernels import get_headers, get_kernel, headers_source
    from tracer.kernel import bcc_engine
    from tracer.kernel.loader import Filters
    from tracer.kernel.plan import BCC_ATTACH

    build = get_headers(get_kernel(KERNEL))
    bpf_class = bcc_engine.import_bcc()
    # Debian splits the headers: the source tree in -common, the generated
    # files in -amd64 (the build directory)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", headers_source(build))
    extra = [f"-I{build}/{d}" for d in ("arch/x86/include/generated", "include",
                                        "arch/x86/include/generated/uapi", "include/generated/uapi")]
    cflags = bcc_engine.BccSession.cflags
    monkeypatch.setattr(bcc_engine.BccSession, "cflags", lambda self: extra + cflags(self))
    s = bcc_engine.BccSession(bcc_plan(), Filters(netns=1, pid=2, port=3))
    try:
        s._compile()
        for name, (kind, _) in BCC_ATTACH.items():
            s._bpf.load_func(name, bpf_class.RAW_TRACEPOINT if kind == "raw_tp" else bpf_class.KPROBE)
    finally:
        s.close()
