"""The pressure lab against the running kernel: each scenario must really move the kernel's
own counters, and leave the host as it found it (sysctls back, namespace gone).

The kernel tests need root (skipped otherwise, see conftest.py). The log-parsing and
result checks at the top need nothing.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from scripts.lab import SCENARIOS, Lab, LabError, Result, kmsg, sockets
from scripts.lab.sysctls import RECOVERY_FILE
from tracer.host import netns, procfs

GLOBAL_SYSCTLS = ("net.ipv4.tcp_mem", "net.ipv4.tcp_max_orphans")


# ---------------------------------------------------------------------------------------
# no root needed

def test_kernel_log_lines_are_counted_per_pattern():
    messages = [
        "TCP: too many orphaned sockets",
        "TCP: too many orphaned sockets",
        "net_ratelimit: 290 callbacks suppressed",
        "TCP: out of memory -- consider tuning tcp_mem",
        "net_ratelimit: 10 callbacks suppressed",
        "eth0: link up",
    ]
    assert kmsg.count_lines(messages) == {
        kmsg.ORPHANS: 2, kmsg.OUT_OF_MEMORY: 1, kmsg.SUPPRESSED: 2}
    assert kmsg.suppressed_total(messages) == 300


def test_result_checks_counters_against_expectations():
    result = Result("x", 10, "ns", 1, deltas={"A": 5, "B": 0, "C": 7},
                    expected={"A": (5, 5), "B": (1, None), "C": (0, 6)},
                    kmsg_lines={}, kmsg_suppressed=0, duration_s=0.1)
    assert not result.ok
    assert result.failures() == ["B moved by 0, expected 1..", "C moved by 7, expected 0..6"]


def test_every_scenario_says_whether_it_changes_the_host():
    assert {"tw_overflow", "orphans_close", "orphans_timer", "tcp_mem_send",
            "tcp_mem_recv"} <= set(SCENARIOS)
    assert not SCENARIOS["tw_overflow"].needs_global_sysctls
    assert all(SCENARIOS[name].needs_global_sysctls
               for name in ("orphans_close", "orphans_timer", "tcp_mem_send", "tcp_mem_recv"))
    assert all(s.description and s.default_count > 0 for s in SCENARIOS.values())


# ---------------------------------------------------------------------------------------
# kernel

def _global_sysctls():
    return {name: procfs.read_sysctl(name) for name in GLOBAL_SYSCTLS}


@pytest.fixture
def host_left_as_found():
    """Fail the test if it leaves a host-wide sysctl changed or a lab namespace behind."""
    before = _global_sysctls()
    namespaces = set(os.listdir(netns.NETNS_RUN_DIR)) if os.path.isdir(netns.NETNS_RUN_DIR) \
        else set()
    yield before
    assert _global_sysctls() == before
    after = set(os.listdir(netns.NETNS_RUN_DIR)) if os.path.isdir(netns.NETNS_RUN_DIR) else set()
    assert after <= namespaces
    assert not os.path.exists(RECOVERY_FILE)


def _run(scenario, count=None):
    with Lab(allow_global_sysctls=True) as lab:
        name, inode = lab.netns_name, lab.netns_inode
        assert netns.netns_inode(name) == inode != netns.netns_inode()
        result = lab.run(scenario, count)
    assert not netns.exists(name)
    assert result.netns_name == name and result.netns_inode == inode
    return result


@pytest.mark.kernel
def test_tw_overflow_counts_every_connection_beyond_the_buckets(host_left_as_found):
    result = _run("tw_overflow", 300)
    assert result.ok, result.failures()
    # tcp_max_tw_buckets=5 in a fresh namespace: the first 5 get a bucket.
    assert result.deltas["TCPTimeWaitOverflow"] == 295
    # Since 2.6.37 the kernel logs nothing for this condition.
    assert result.kmsg_lines[kmsg.ORPHANS] == result.kmsg_lines[kmsg.OUT_OF_MEMORY] == 0


@pytest.mark.kernel
def test_orphans_close_aborts_every_orphan_on_the_close_path(host_left_as_found):
    result = _run("orphans_close", 300)
    assert result.ok, result.failures()
    assert result.deltas["TCPAbortOnMemory"] == 300
    assert result.details["aborted_by_end_of_close_loop"] >= 290
    # The log is rate-limited to 10 lines per 5 s (fewer if an earlier test used them).
    assert result.kmsg_lines[kmsg.ORPHANS] <= 10


@pytest.mark.kernel
def test_orphans_timer_kills_orphans_only_through_the_shift(host_left_as_found):
    result = _run("orphans_timer", 300)
    assert result.ok, result.failures()
    assert result.details["tcp_max_orphans"] >= 300  # the orphans alone never exceed it
    assert result.deltas["TCPAbortOnMemory"] >= 150
    timeline = result.details["timeline"]
    # First RTO of each orphan: shift 0 (no sk_err_soft yet), 300 << 0 is not above the
    # limit, nobody dies. Second RTO: its failed retransmission set sk_err_soft, shift 1.
    first_round = [p for p in timeline if p["TCPTimeouts"] <= 300]
    assert first_round and all(p["TCPAbortOnMemory"] == 0 for p in first_round)
    assert any(p["TCPAbortOnMemory"] > 0 and p["TCPTimeouts"] > 300 for p in timeline)
    assert result.duration_s < 10


@pytest.mark.kernel
def test_tcp_mem_send_enters_pressure_and_is_capped(host_left_as_found):
    result = _run("tcp_mem_send", 50)
    assert result.ok, result.failures()
    assert result.deltas["TCPMemoryPressures"] >= 1
    assert result.details["tiny_tcp_mem_s"] <= 2.0


@pytest.mark.kernel
def test_tcp_mem_recv_refuses_receive_memory(host_left_as_found):
    result = _run("tcp_mem_recv", 50)
    assert result.ok, result.failures()
    assert result.deltas["PruneCalled"] >= 1
    assert result.deltas["TCPRcvQDrop"] + result.deltas["TCPOFODrop"] >= 1
    assert result.details["tiny_tcp_mem_s"] <= 2.0


@pytest.mark.kernel
def test_orphans_tcp_mem_aborts_for_memory_not_for_count(host_left_as_found):
    result = _run("orphans_tcp_mem", 50)
    assert result.ok, result.failures()
    assert result.deltas["TCPAbortOnMemory"] == 50


@pytest.mark.kernel
def test_one_lab_runs_scenarios_one_after_another(host_left_as_found):
    with Lab(allow_global_sysctls=True) as lab:
        first = lab.run("tw_overflow", 50)
        second = lab.run("tw_overflow", 50)
        # tcp_max_tw_buckets went back to its default in between, then was set again.
        assert procfs.read_sysctl("net.ipv4.tcp_max_tw_buckets", lab.netns_name) != "5"
    assert first.deltas["TCPTimeWaitOverflow"] == 45
    # The 5 TIME_WAIT sockets of the first run still hold every bucket (they live 60 s).
    assert second.deltas["TCPTimeWaitOverflow"] == 50
    assert first.ok and second.ok


@pytest.mark.kernel
def test_host_wide_changes_are_refused_without_the_flag(host_left_as_found):
    with Lab() as lab:
        with pytest.raises(LabError, match="allow"):
            lab.run("orphans_close")
        with pytest.raises(LabError, match="unknown"):
            lab.run("no_such_scenario")


@pytest.mark.kernel
def test_tcp_mem_is_restored_by_the_watchdog_when_the_workload_hangs(
        host_left_as_found, monkeypatch):
    original = host_left_as_found["net.ipv4.tcp_mem"]
    real_send_for = sockets.send_for
    hang_s = 3.0

    def hanging_send_for(*args, **kwargs):
        time.sleep(hang_s)
        return real_send_for(*args, **kwargs)

    monkeypatch.setattr(sockets, "send_for", hanging_send_for)
    seen = []
    done = threading.Event()

    def watch():
        start = time.monotonic()
        while not done.is_set():
            seen.append((time.monotonic() - start, procfs.read_sysctl("net.ipv4.tcp_mem")))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = _run("tcp_mem_send", 5)
    finally:
        done.set()
        watcher.join()
    tiny_for = [t for t, value in seen if value != original]
    assert tiny_for, "tcp_mem was never lowered"
    assert max(tiny_for) - min(tiny_for) <= 2.2
    assert result.details["tiny_tcp_mem_s"] <= 2.05


def _lab_process(scenario):
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.lab", scenario, "--allow-global-sysctls"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_tiny_tcp_mem(original, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while procfs.read_sysctl("net.ipv4.tcp_mem") == original:
        assert time.monotonic() < deadline, "tcp_mem was never lowered"
        time.sleep(0.01)


@pytest.mark.kernel
def test_sigterm_restores_sysctls_and_deletes_the_namespace(host_left_as_found):
    original = host_left_as_found["net.ipv4.tcp_mem"]
    proc = _lab_process("tcp_mem_recv")
    try:
        _wait_for_tiny_tcp_mem(original)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    # host_left_as_found checks the sysctls and namespaces.


@pytest.mark.kernel
def test_after_sigkill_the_watchdog_and_the_next_lab_clean_up(host_left_as_found):
    original = host_left_as_found["net.ipv4.tcp_mem"]
    proc = _lab_process("tcp_mem_recv")
    try:
        _wait_for_tiny_tcp_mem(original)
        proc.kill()
        proc.wait(timeout=5)
        # Nothing in the killed process runs any more; its watchdog process still does.
        assert sockets.wait_until(
            lambda: procfs.read_sysctl("net.ipv4.tcp_mem") == original, timeout_s=3.0)
        stale = [n for n in os.listdir(netns.NETNS_RUN_DIR) if f"-{proc.pid}-" in n]
        assert stale and os.path.exists(RECOVERY_FILE)
        with Lab():
            # Entering removes what the killed lab left, and ends the memory pressure its
            # sockets left behind (nothing else would until some socket freed memory).
            assert procfs.tcp_memory_pressure() is not True
        assert not any(netns.exists(n) for n in stale)
        assert not os.path.exists(RECOVERY_FILE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.kernel
def test_temporary_namespace_is_deleted_on_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt):
        with netns.temporary("tcpoom-test-") as name:
            assert netns.exists(name)
            assert procfs.read_sockstat(name)["TCP"]["inuse"] == 0
            raise KeyboardInterrupt
    assert not netns.exists(name)


@pytest.mark.kernel
def test_run_in_netns_returns_and_reraises_without_moving_the_caller():
    own = netns.netns_inode()
    with netns.temporary("tcpoom-test-") as name:
        inode = netns.netns_inode(name)
        assert netns.run_in_netns(name, netns.netns_inode) == inode
        assert netns.run_in_netns(inode, netns.netns_inode) == inode  # found by inode
        assert netns.resolve(inode) == os.path.join(netns.NETNS_RUN_DIR, name)
        with pytest.raises(ZeroDivisionError):
            netns.run_in_netns(name, lambda: 1 / 0)
        # Per-namespace sysctls are read and written inside the namespace.
        procfs.write_sysctl("net.ipv4.tcp_max_tw_buckets", 7, name)
        assert procfs.read_sysctl("net.ipv4.tcp_max_tw_buckets", name) == "7"
        assert procfs.tcp_limits(name).tcp_max_tw_buckets == 7
        assert procfs.read_sysctl("net.ipv4.tcp_max_tw_buckets") != "7"
    assert netns.netns_inode() == own
