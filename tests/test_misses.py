"""The kernel's miss counts of tcpoom's programs (issue 13, finding 3): the
uapi offsets, which kernels count what, and the sums per family."""
import os

import pytest

from tracer.kernel import misses
from tracer.kernel.misses import Misses


def _btf():
    from tracer.kernel import btf
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF")
    return btf.Btf.vmlinux()


def test_prog_info_offsets_match_the_kernels_btf():
    with _btf() as btf:
        size, members = btf.struct_layout("bpf_prog_info")
    assert dict(members)["recursion_misses"] == misses.RECURSION_MISSES_OFF
    assert size <= misses.PROG_INFO_SIZE or size >= misses.RECURSION_MISSES_OFF + 8
    with _btf() as btf:
        assert btf.enum_value("bpf_link_type", "BPF_LINK_TYPE_PERF_EVENT") == misses.LINK_TYPE_PERF_EVENT
        assert btf.enum_value("bpf_perf_event_type", "BPF_PERF_EVENT_KPROBE") == misses.PERF_EVENT_KPROBE
        assert btf.enum_value("bpf_perf_event_type", "BPF_PERF_EVENT_KRETPROBE") == \
            misses.PERF_EVENT_KRETPROBE


def _fake(monkeypatch, progs, links):
    monkeypatch.setattr(misses, "recursion_misses", lambda fd: progs.get(fd))
    monkeypatch.setattr(misses, "kprobe_missed", lambda fd: links.get(fd))


def test_kprobe_family_sums_program_and_kprobe_misses_from_67(monkeypatch):
    _fake(monkeypatch, {3: 1, 4: 0}, {13: 2, 14: 5})
    m = Misses([("tw_overflow", "kprobe", 3, 13), ("tw_overflow", "kprobe", 4, 14)], (6, 12))
    assert m.read() == {"tw_overflow": 8}
    assert m.unmeasured() == {}


def test_before_67_kprobes_are_not_counted_and_say_so(monkeypatch):
    _fake(monkeypatch, {3: 0}, {13: 0})
    m = Misses([("tw_overflow", "kprobe", 3, 13)], (6, 1))
    assert m.read() == {"tw_overflow": None}
    why = m.unmeasured()["tw_overflow"]
    assert "before 6.7" in why and "bpf_link_info (6.7+)" in why


def test_tracepoints_count_from_61_and_fentry_wherever_the_field_exists(monkeypatch):
    _fake(monkeypatch, {1: 4, 2: 0}, {})
    assert Misses([("mem_exceed", "tp_btf", 1, -1)], (5, 15)).read() == {"mem_exceed": None}
    assert Misses([("mem_exceed", "tp_btf", 1, -1)], (6, 1)).read() == {"mem_exceed": 4}
    assert Misses([("oom_check", "fentry", 2, -1)], (5, 15)).read() == {"oom_check": 0}
    _fake(monkeypatch, {}, {})      # 5.10: no recursion_misses field
    m = Misses([("oom_check", "fentry", 2, -1)], (5, 10))
    assert m.read() == {"oom_check": None}
    assert "5.12+" in m.unmeasured()["oom_check"]


def test_bcc_kprobes_have_no_link_to_ask(monkeypatch):
    _fake(monkeypatch, {3: 1}, {})
    m = Misses([("pressure", "kprobe", 3, -1)], (6, 12), links=False)
    assert m.read() == {"pressure": 1}
    assert "no BPF link" in m.unmeasured()["pressure"]


def test_delta_keeps_only_growth():
    assert misses.delta({"a": 5, "b": None, "c": 2}, {"a": 3, "c": 2}) == {"a": 2}


@pytest.mark.kernel
def test_attached_tracepoint_programs_report_a_count_here():
    """On this 6.1+ kernel the tracepoint programs count their recursion
    misses: every traced family reads a number (0 at rest), not 'unknown'."""
    from tracer.kernel import facts as kernel_facts, loader
    from tracer.kernel.plan import build
    if os.geteuid() != 0:
        pytest.skip("needs root")
    f = kernel_facts.gather()
    plan = build(f)
    session = loader.start(f, plan, loader.Filters())
    try:
        got = session.misses.read()
    finally:
        session.close()
    traced = {fam for fam, fp in session.plan.families.items() if fp.programs}
    assert traced and set(got) == traced
    if f.version() >= (6, 1):
        assert all(isinstance(n, int) and n >= 0 for n in got.values()), got


def test_loss_blocks_carry_misses_to_the_report_and_diagnosis():
    from tracer.analysis import diagnosis
    from tracer.model.aggregate import Aggregate
    agg = Aggregate({})
    agg.add_loss({"ts_ns": 1, "lost": {"tw_overflow": 1}, "missed": {"tw_overflow": 2}})
    agg.add_loss({"ts_ns": 2, "lost": {}, "missed": {"tw_overflow": 1, "pressure": 4}})
    assert dict(agg.missed) == {"tw_overflow": 3, "pressure": 4}
    m = {"missed": dict(agg.missed)}
    rec = diagnosis._Recording.__new__(diagnosis._Recording)
    rec.m = m
    found, = diagnosis._missed(rec)
    assert found["id"] == "missed" and found["title"].startswith("7 calls the probes did not see")
