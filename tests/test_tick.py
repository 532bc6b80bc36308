"""The one tick (tracer/capture/tick.py) without a kernel: losses are the
counters' growth since the last second, holders come when pressure starts and
every HOLDERS_EVERY_S while it lasts, and a third caller (a flight recorder)
just adds its listeners."""
from tracer.capture import tick as tick_mod
from tracer.model import events as ev
from tracer.host.privileges import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, may_trace


class FakeSession:
    def __init__(self):
        self.values = [0] * ev.CNT_MAX

    def counters(self):
        return list(self.values)


def test_seconds_carry_losses_and_holders(monkeypatch):
    pressure = [False]
    monkeypatch.setattr(tick_mod.snapshots, "take",
                        lambda netns=None: {"ts_ns": 1, "pressure": pressure[0]})
    monkeypatch.setattr(tick_mod, "holders_snapshot",
                        lambda netns, reason: {"top": [], "reason": reason})
    session = FakeSession()
    t = tick_mod.Tick(session, None, holders_every_s=5.0)
    seen, calls = [], []
    t.on_second(seen.append).on_call(calls.append)
    lost_tw = ev.CNT_LOST_BASE + ev.TW_OVERFLOW
    s = t.second(100.0)
    assert s.lost == {} and s.holders is None
    session.values[lost_tw] = 7
    pressure[0] = True
    s = t.second(101.0)
    assert s.lost == {"tw_overflow": 7} and s.holders["reason"] == "pressure started"
    s = t.second(102.0)                      # no new loss; pressure goes on, too soon for holders
    assert s.lost == {} and s.holders is None
    session.values[lost_tw] = 9
    s = t.second(106.5)
    assert s.lost == {"tw_overflow": 2} and s.holders["reason"] == "pressure continues"
    t()                                      # due: one second for every listener, then the calls
    assert len(seen) == 1 and len(calls) == 1
    t()                                      # not due again within the period
    assert len(seen) == 1 and len(calls) == 2


def test_without_a_session_there_are_no_counters(monkeypatch):
    monkeypatch.setattr(tick_mod.snapshots, "take", lambda netns=None: {"ts_ns": 1})
    s = tick_mod.Tick(None, None).second(1.0)
    assert s.counters is None and s.lost == {}


def test_tracing_needs_sys_admin_or_bpf_with_perfmon():
    assert may_trace(1 << CAP_SYS_ADMIN)
    assert may_trace(1 << CAP_BPF | 1 << CAP_PERFMON)
    assert not may_trace(1 << CAP_BPF)
    assert not may_trace(1 << CAP_PERFMON)
    assert not may_trace(0) and not may_trace(None)


def test_seconds_carry_the_kernels_miss_counts(monkeypatch):
    """Finding 3: the programs' recursion misses and kprobe missed counts (and
    the kprobe returns whose entry a nested call took) reach recordings as the
    growth since the last second, and the live view as the running total."""
    monkeypatch.setattr(tick_mod.snapshots, "take", lambda netns=None: {"ts_ns": 1})
    kernel = {"oom_check": 0, "pressure": None}

    def missed(counters):
        out = dict(kernel)
        out["oom_check"] += counters[ev.CNT_UNPAIRED_BASE + ev.OOM_CHECK]
        return out
    session = FakeSession()
    t = tick_mod.Tick(session, None, missed=missed)
    s = t.second(1.0)
    assert s.missed == {} and s.missed_total == {"oom_check": 0, "pressure": None}
    kernel["oom_check"] = 2
    session.values[ev.CNT_UNPAIRED_BASE + ev.OOM_CHECK] = 1
    s = t.second(2.0)
    assert s.missed == {"oom_check": 3} and s.missed_total["oom_check"] == 3
    s = t.second(3.0)
    assert s.missed == {}
