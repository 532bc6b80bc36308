"""Probe-plan decisions from recorded kernel facts (no root, no kernel needed)."""
import os

from conftest import DATA
from tracer.commands.probes import render
from tracer.kernel_facts import KernelFacts
from tracer.plan import build


def facts(name):
    return KernelFacts.load(os.path.join(DATA, name))


def test_this_machine_uses_tracepoints_and_says_why():
    p = build(facts("facts-6.18-tracepoints-only.json"))
    assert p.families["oom_check"].method == "tp_btf"
    assert p.families["oom_check"].target == "tcp:tcp_send_reset"
    assert p.families["tw_overflow"].method == "tp_btf"
    assert p.families["mem_exceed"].method == "tp_btf"
    assert p.families["pressure"].method == "sampled"
    reasons = dict(p.families["oom_check"].rejected)
    assert reasons["fentry tcp_check_oom"] == "load refused (EPERM)"
    assert reasons["kprobe tcp_check_oom"] == "kernel built without CONFIG_KPROBES"
    assert p.families["oom_check"].fields["orphans"][0] == "sampled"
    assert p.families["oom_check"].fields["shift"][0] == "derived"
    assert p.config["oom_from_resets"] == 1


def test_debian_61_picks_fentry_with_exact_shift_and_orphans():
    p = build(facts("facts-6.1-debian.json"))
    oom = p.families["oom_check"]
    assert oom.method == "fentry" and oom.target == "tcp_check_oom"
    assert "check_oom_fexit" in oom.programs and "close_enter_fentry" in oom.programs
    assert oom.fields["shift"][0] == "exact"
    assert oom.fields["orphans"][0] == "exact"
    assert oom.fields["max_orphans"][0] == "exact"
    assert p.families["tw_overflow"].method == "fentry"
    assert p.families["tw_overflow"].fields["verdict"][0] == "exact"
    assert p.families["pressure"].method == "fentry"
    assert p.config["orphan_cache_addr"] != 0
    assert p.config["oom_from_resets"] == 0


def test_debian_61_without_fentry_falls_back_to_kprobes():
    f = facts("facts-6.1-debian.json")
    f.fentry_errno = 1
    p = build(f)
    assert p.families["oom_check"].method == "kprobe"
    assert "check_oom_kretprobe" in p.families["oom_check"].programs
    assert p.families["tw_overflow"].method == "kprobe"
    assert p.families["pressure"].method == "kprobe"
    # tcp_send_reset on 6.1 has no reason: the tracepoint tier would be refused
    f.kprobes = False
    p = build(f)
    reasons = dict(p.families["oom_check"].rejected)
    assert "3 needed" in reasons["tp_btf tcp:tcp_send_reset"]
    assert p.families["oom_check"].method == "sampled"
    assert p.families["tw_overflow"].method == "tp_btf"
    assert "reset_note_btf" in p.families["tw_overflow"].programs


def test_old_kernel_without_btf_is_counters_only_and_says_so():
    p = build(facts("facts-4.19-no-btf.json"))
    assert p.engine == "none"
    for fam in p.families.values():
        assert fam.method == "sampled"
        assert any("no BTF" in why for _, why in fam.rejected) or not fam.rejected
    assert any("bcc" in n for n in p.notes)


def test_a_refused_program_demotes_its_family_only():
    f = facts("facts-6.1-debian.json")
    p = build(f)
    p2 = p.demote("oom_check", "R1 invalid mem access", f)
    assert p2.families["oom_check"].method == "kprobe"
    assert ("fentry tcp_check_oom", "R1 invalid mem access") in p2.families["oom_check"].rejected
    assert p2.families["tw_overflow"].method == "fentry"


def test_plan_is_deterministic_and_renders():
    f = facts("facts-6.18-tracepoints-only.json")
    assert build(f).to_json() == build(f).to_json()
    text = render(build(f))
    assert "oom_check: tp_btf tcp:tcp_send_reset" in text
    assert "rejected fentry tcp_check_oom: load refused (EPERM)" in text
