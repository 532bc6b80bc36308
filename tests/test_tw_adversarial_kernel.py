"""TIME_WAIT overflows counted exactly next to the closes that look like them.

Each lab scenario fills the namespace's TIME_WAIT table and mixes genuine overflows with
linger-0 aborts, connect(AF_UNSPEC) disconnects and reuses, FIN_WAIT1 aborts (TCP_LINGER2
-1, data after close), IPv6, the same 4-tuples in a second namespace, two busy CPUs. The
tracer (`tcpoom trace --netns`) must count what TCPTimeWaitOverflow of that namespace
counts, 20 runs out of 20, whatever method the plan chose on this kernel.
"""
import pytest

from scripts.counts_check import run_once

pytestmark = pytest.mark.kernel

RUNS = 20
SCENARIOS = ("tw_linger0", "tw_late_data", "tw_ipv6", "tw_two_netns", "tw_two_cpus")


def _row(r) -> dict:
    return next((x for x in (r["totals"] or {}).get("families", []) if x["family"] == "tw_overflow"), {})


def _exact(r) -> bool:
    """Equal to the namespace's counter, or short only by what the kernel says
    it skipped (issue 13): a tp_btf program does not run nested in itself on
    one CPU (6.1+, counted in recursion_misses), so a softirq's TCP_CLOSE that
    interrupts the program in process context is not seen; the totals row then
    says `explained_by_misses`. A shortfall without that is a failure."""
    if not (r["returncode"] == 0 and r["lost"] == 0 and r["printed"] == r["seen"]
            and r["kernel_delta"] == r["lab_delta"]):
        return False
    return r["seen"] == r["kernel_delta"] or bool(_row(r).get("explained_by_misses"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tw_overflow_count_equals_the_namespace_counter_20_of_20(scenario):
    figures, bad = [], []
    for i in range(RUNS):
        r = run_once(scenario)
        figures.append(f"{r['seen']}/{r['kernel_delta']}")
        if not _exact(r):
            row = _row(r)
            # the inference's own counts tell a wrong cancel from a missed
            # candidate; `missed`, the kernel's skipped runs of the programs
            bad.append((i, r["seen"], r["printed"], r["kernel_delta"], r["lab_delta"], r["lost"],
                        row.get("missed"), row.get("inference"), r["returncode"], r["stderr"][-300:]))
    assert not bad, f"{scenario}: {RUNS - len(bad)}/{RUNS} exact; seen/kernel {' '.join(figures)}; {bad[:3]}"


def test_user_space_confirms_where_the_kernel_cannot_run_the_confirmation():
    """Before 5.10 a raw_tp program cannot be test-run: the candidates no state
    change confirmed are taken out of tw_pending by user space, sent as records
    of their own and counted once, and the count still equals the kernel's.
    (How many user space takes depends on the host's other TCP sockets, whose
    state changes let the kernel confirm them first: both are counted once.)"""
    import threading

    from scripts.lab import Lab
    from tracer.capture.capture import Capture, Stop
    from tracer.kernel import loader
    from tracer.model import events as ev

    with Lab() as lab:
        cap = Capture(loader.Filters(netns=lab.netns_inode, families=["tw_overflow"]),
                      sample_orphans=False)
        if cap.plan.families["tw_overflow"].method not in ("tp_btf", "raw_tp"):
            pytest.skip("the tracepoint tier is not this kernel's best: "
                        + cap.plan.families["tw_overflow"].method)
        cap.start()
        try:
            cap.session.programs.remove("tw_settle_run")    # as on a kernel before 5.10
            stop = Stop(None, None)
            records = []
            out = {}

            def workload():
                out["result"] = lab.run("tw_linger0")
                stop.request("duration")    # the last candidates are still open

            t = threading.Thread(target=workload)
            t.start()
            totals = cap.run(lambda payload, n: records.append(bytes(payload)) or n, stop)
            t.join()
        finally:
            cap.close()
    want = out["result"].deltas["TCPTimeWaitOverflow"]
    row = next(r for r in totals.rows() if r["family"] == "tw_overflow")
    families = [ev.Event.decode(p, ev.at(i)).family for p in records
                for i in range(len(p) // ev.STRIDE)]
    assert row["seen"] == row["kernel_delta"] == want > 0
    assert families.count(ev.TW_OVERFLOW) == want
    inf = row["inference"]
    assert inf["cancelled"] > 0 and inf["undecided"] == 0
    assert inf["candidates"] == inf["cancelled"] + inf["confirmed"]
