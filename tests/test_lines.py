"""Event lines and totals from synthetic records (formatting only)."""
from tracer.model import events as ev
from tracer.model.events import Event
from tracer.kernel.facts import KernelFacts
from tracer.model.clock import Clock
from tracer.model.samples import Sampled
from tracer.render.lines import as_json, text
from tracer.kernel.plan import build
from tracer.capture.totals import Totals

import os
from conftest import DATA

CLOCK = Clock(0)
V4 = lambda *b: bytes(b) + b"\0" * 12  # noqa: E731


def oom_event(**kw):
    base = dict(ts_ns=3_600_000_123_000, family=ev.OOM_CHECK, method=ev.TP_BTF, pid=42, comm=b"nginx",
                af=2, saddr=V4(10, 0, 0, 1), sport=443, daddr=V4(10, 0, 0, 9), dport=51000, state=7,
                caller=ev.CALLER_CLOSE, shift=0, memory_allocated=318, tcp_mem=(10, 20, 40),
                wmem_queued=4194304, verdict=ev.VERDICT_ORPHANS | ev.VERDICT_KILLED | ev.VERDICT_RESET,
                exact=ev.FIELD_MEMORY | ev.FIELD_TCP_MEM | ev.FIELD_SOCKET,
                derived=ev.FIELD_SHIFT | ev.FIELD_VERDICT | ev.FIELD_CALLER)
    base.update(kw)
    return Event.make(**base)


def test_oom_line_marks_sampled_orphans():
    s = Sampled()
    s.add(3_599_000_000_000, 5, 131072)      # long before: not this one
    s.add(3_600_000_100_000, 301, 0)         # nearest to the event
    s.add(3_600_900_000_000, 2, 131072)      # after the lab restored the limit
    line = text(oom_event(), CLOCK, s)
    assert line.endswith("oom_check   too_many_orphans close shift=0 orphans=~301/0 mem=318/40p "
                         "wq=4194304 rst 10.0.0.1:443 > 10.0.0.9:51000 CLOSE pid=42 nginx")


def test_oom_json_says_where_each_figure_came_from():
    s = Sampled()
    s.add(3_600_000_000_000, 301, 0)
    d = as_json(oom_event(shift=1, caller=ev.CALLER_TIMER,
                          verdict=ev.VERDICT_ORPHANS | ev.VERDICT_SHIFT_MIN), CLOCK, s)
    assert d["family"] == "oom_check" and d["caller"] == "timer"
    assert d["shift"] == 1 and d["shift_is_lower_bound"] is True
    assert d["orphans"] == 301 and d["fidelity"]["orphans"] == "sampled"
    assert d["fidelity"]["memory_allocated"] == "exact" and d["fidelity"]["shift"] == "derived"
    assert d["tcp_mem"] == [10, 20, 40] and d["local"] == "10.0.0.1:443"


def test_tw_and_mem_exceed_lines():
    tw = Event.make(ts_ns=1, family=ev.TW_OVERFLOW, method=ev.TP_BTF, af=2, saddr=V4(127, 0, 0, 1),
                    sport=5000, daddr=V4(127, 0, 0, 1), dport=80, state=5, tw_count=5,
                    max_tw_buckets=5, netns=4026532177, comm=b"swapper/1")
    assert "tw_overflow tw=5/5 netns=4026532177 127.0.0.1:5000 > 127.0.0.1:80 FIN_WAIT2" in text(tw, CLOCK, Sampled())
    mem = Event.make(ts_ns=1, family=ev.MEM_EXCEED, method=ev.TP_BTF, af=10, saddr=b"\0" * 15 + b"\1",
                     sport=22, daddr=b"\0" * 15 + b"\1", dport=3333, state=1, memory_allocated=318,
                     tcp_mem=(10, 20, 40), rmem_alloc=0, rcvbuf=131072, wmem_queued=65536,
                     sndbuf=87040, verdict=ev.VERDICT_SEND)
    line = text(mem, CLOCK, Sampled())
    assert "mem_exceed  send alloc=318p > tcp_mem[2]=40p (795%)" in line
    # refused under pressure, below the hard limit (a socket over its fair share)
    share = Event.make(ts_ns=1, family=ev.MEM_EXCEED, method=ev.TP_BTF, memory_allocated=34,
                       tcp_mem=(10, 20, 40), verdict=ev.VERDICT_SEND)
    assert "send alloc=34p <= tcp_mem[2]=40p (85%) under pressure, over its share" in text(share, CLOCK, Sampled())
    assert "[::1]:22 > [::1]:3333 ESTABLISHED" in line


def test_totals_say_what_was_not_seen_one_by_one():
    plan = build(KernelFacts.load(os.path.join(DATA, "facts-6.18-tracepoints-only.json")))
    counters = [0] * ev.CNT_MAX
    counters[ev.CNT_OOM_CHECK] = 298
    counters[ev.CNT_OOM_ORPHANS] = 298
    counters[ev.CNT_TW_OVERFLOW] = 295
    t = Totals(plan, ["oom_check", "tw_overflow"], 2.0, counters, {"oom_check": 298, "tw_overflow": 295},
               {}, {"TCPAbortOnMemory": 10, "TCPTimeWaitOverflow": 0},
               {"TCPAbortOnMemory": 310, "TCPTimeWaitOverflow": 295}, 4026532177, "SIGINT")
    rows = {r["family"]: r for r in t.rows()}
    assert rows["tw_overflow"]["match"] is True
    assert rows["oom_check"]["not_seen_individually"] == 2
    out = t.text()
    assert "oom_check        298     0      -  TCPAbortOnMemory           300" in out
    assert "2 counted by the kernel but not seen one by one" in out
    assert t.to_json()["type"] == "totals"


def test_totals_explain_a_shortfall_by_the_kernels_miss_counts():
    plan = build(KernelFacts.load(os.path.join(DATA, "facts-6.1-debian.json")))
    counters = [0] * ev.CNT_MAX
    counters[ev.CNT_TW_OVERFLOW] = 93
    t = Totals(plan, ["tw_overflow", "pressure"], 2.0, counters, {"tw_overflow": 93}, {},
               {"TCPTimeWaitOverflow": 0}, {"TCPTimeWaitOverflow": 95}, 1, "SIGINT",
               missed={"tw_overflow": 2, "pressure": None},
               missed_unmeasured={"pressure": "kprobe programs skipped while another runs are not "
                                              "counted before 6.7"})
    rows = {r["family"]: r for r in t.rows()}
    assert rows["tw_overflow"]["missed"] == 2 and rows["tw_overflow"]["explained_by_misses"]
    out = t.text()
    assert "tw_overflow       93     0      2  TCPTimeWaitOverflow         95" in out
    assert "the probes missed these (kernel's own miss counts)" in out
    assert "missed, not counted by this kernel: pressure: kprobe programs" in out
    assert t.to_json()["missed"] == {"tw_overflow": 2, "pressure": None}


def _tw_totals(counters, tcpext_after, settled=0, undecided=0, filtered=True):
    plan = build(KernelFacts.load(os.path.join(DATA, "facts-6.18-tracepoints-only.json")))
    c = [0] * ev.CNT_MAX
    for slot, n in counters.items():
        c[slot] = n
    before = {k: 0 for k in tcpext_after}
    return Totals(plan, ["tw_overflow"], 2.0, c, {"tw_overflow": 0}, {}, before, tcpext_after,
                  4026532177, "SIGINT", tw_settled=settled, tw_undecided=undecided,
                  netns_filtered=filtered)


def test_tw_inference_totals_count_what_was_confirmed_and_say_how():
    # 60 closes looked like overflows, 20 were cancelled by the reset or error that
    # followed them, 38 confirmed in the kernel and 2 by user space (a kernel before
    # 5.10 cannot run the confirmation program for it)
    t = _tw_totals({ev.CNT_TW_CANDIDATES: 60, ev.CNT_TW_CANCELLED: 20, ev.CNT_TW_OVERFLOW: 38},
                   {"TCPTimeWaitOverflow": 40, "TCPAbortFailed": 0}, settled=2)
    row = t.rows()[0]
    assert row["seen"] == 40 and row["match"] is True and "surplus" not in row
    assert row["inference"] == {"candidates": 60, "cancelled": 20, "confirmed": 40,
                                "confirmed_in_user_space": 2, "confirmed_unchecked": 0, "undecided": 0}
    assert "inferred at the close: 60 candidates, 20 cancelled by a reset or an error on the socket, " \
           "40 confirmed (2 by user space, 0 at once: pending table full)" in t.text()


def test_tw_surplus_is_explained_by_failed_resets_and_a_shortfall_by_the_blind_spot():
    t = _tw_totals({ev.CNT_TW_CANDIDATES: 45, ev.CNT_TW_OVERFLOW: 45},
                   {"TCPTimeWaitOverflow": 40, "TCPAbortFailed": 3})
    row = t.rows()[0]
    assert row["surplus"] == 5 and row["surplus_explained"] == 3
    assert "5 more than the kernel counted: TCPAbortFailed +3" in t.text()
    short = _tw_totals({ev.CNT_TW_OVERFLOW: 38}, {"TCPTimeWaitOverflow": 40, "TCPAbortFailed": 0})
    assert short.rows()[0]["not_seen_individually"] == 2 and "surplus" not in short.rows()[0]
    # without --netns the count covers every namespace, the counter one
    wide = _tw_totals({ev.CNT_TW_OVERFLOW: 45}, {"TCPTimeWaitOverflow": 40}, filtered=False)
    assert "trace with --netns" in wide.rows()[0]["surplus_why"]


def test_mem_drop_line_says_site_cause_and_queue():
    e = Event.make(ts_ns=1, family=ev.MEM_DROP, method=ev.TP_BTF, af=2, saddr=V4(127, 0, 0, 1), sport=8080,
                   daddr=V4(127, 0, 0, 1), dport=50000, state=1, netns=7, rmem_alloc=67200, rcvbuf=8192,
                   memory_allocated=300, tcp_mem=(10, 20, 40),
                   verdict=ev.VERDICT_DROP_RCVQ | ev.VERDICT_DROP_RCVBUF)
    line = text(e, CLOCK, Sampled())
    assert "mem_drop    rcvq rcvbuf full rmem=67200/8192 mem=300/40p netns=7 127.0.0.1:8080 > " in line
    hard = Event.make(ts_ns=1, family=ev.MEM_DROP, method=ev.TP_BTF, verdict=ev.VERDICT_DROP_OFO,
                      mem_class=ev.MEM_CLASS_HARD, derived=ev.FIELD_MEM_CLASS, rcvbuf=-1, memory_allocated=-1)
    assert "ofo class=hard_limit netns=0" in text(hard, CLOCK, Sampled())


def _drop_plan():
    f = KernelFacts.load(os.path.join(DATA, "facts-6.18-tracepoints-only.json"))
    f.tracepoints["kfree_skb"] = 4
    f.drop_reasons = {"PROTO_MEM": 20, "TCP_OFO_QUEUE_PRUNE": 52, "SOCKET_BACKLOG": 29}
    return build(f)


def test_mem_drop_totals_sum_three_counters_and_reconcile_each_site():
    counters = [0] * ev.CNT_MAX
    counters[ev.CNT_MEM_DROP] = 101
    counters[ev.CNT_DROP_RCVQ] = 100
    counters[ev.CNT_DROP_OFO] = 1
    counters[ev.CNT_DROP_PRUNE] = 9
    before = {"TCPRcvQDrop": 5, "TCPOFODrop": 0, "TCPBacklogDrop": 0, "OfoPruned": 0}
    after = {"TCPRcvQDrop": 105, "TCPOFODrop": 1, "TCPBacklogDrop": 0, "OfoPruned": 2}
    t = Totals(_drop_plan(), ["mem_drop"], 2.0, counters, {"mem_drop": 110}, {}, before, after,
               4026532177, "SIGINT")
    row = t.rows()[0]
    assert row["kernel_delta"] == 101 and row["match"] is True
    assert row["sites"]["rcvq"] == {"seen": 100, "kernel_counter": "TCPRcvQDrop", "kernel_delta": 100}
    assert row["sites"]["ofo"]["kernel_delta"] == 1
    # pruned skbs against prune calls: shown side by side, never a mismatch
    assert row["sites"]["ofo_pruned"] == {"seen": 9, "kernel_counter": "OfoPruned (calls)", "kernel_delta": 2}
    out = t.text()
    assert "TCPRcvQDrop+TCPOFODrop+TCPBacklogDrop" in out and "<- differs" not in out
    assert "ofo_pruned         9  OfoPruned (calls)            2" in out
    assert t.to_json()["tcpext_delta"]["TCPBacklogDrop"] == 0
