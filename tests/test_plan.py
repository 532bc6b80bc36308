"""Probe-plan decisions from recorded kernel facts (no root, no kernel needed)."""
import os
import re

import pytest

from conftest import DATA, ROOT
from tracer.cli.commands.probes import render
from tracer.errors import KernelUnsupported
from tracer.kernel.facts import KernelFacts
from tracer.kernel import plan as plan_mod
from tracer.kernel.plan import BCC_ATTACH, build, choose_engine
from tracer.model.families import FAMILY_ORDER


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
    # the inference is confirmed or cancelled by what follows on the socket
    assert p.families["tw_overflow"].programs == ["set_state_btf", "tw_reset_btf", "tw_destroy_btf",
                                                  "tw_settle_run"]


def test_tw_inference_without_destroy_tracepoint_says_what_it_misses():
    f = facts("facts-6.18-tracepoints-only.json")
    del f.tracepoints["tcp_destroy_sock"]
    tw = build(f).families["tw_overflow"]
    assert tw.programs == ["set_state_btf", "tw_reset_btf", "tw_settle_run"]
    assert "TCPAbortFailed" in tw.blind_spot and "tcp_destroy_sock" in tw.blind_spot
    # before 5.10 user space cannot run the confirmation program (raw_tp test runs)
    f.release = "5.9.0"
    assert "tw_settle_run" not in build(f).families["tw_overflow"].programs
    # without tcp_send_reset nothing could cancel a candidate: no inference at all
    del f.tracepoints["tcp_send_reset"]
    assert build(f).families["tw_overflow"].method == "sampled"


def test_btf_without_ring_buffer_is_counters_only_and_says_why():
    # 5.4 with BTF (CONFIG_DEBUG_INFO_BTF from 5.2): the object's events map is a
    # BPF ring buffer (5.8+), so nothing could load
    f = facts("facts-6.18-tracepoints-only.json")
    f.release, f.ringbuf = "5.4.0-generic", None
    p = build(f)
    assert p.engine == "none"
    assert all(fp.method == "sampled" for fp in p.families.values())
    assert any("ring buffer" in n and "counters only" in n for n in p.notes)
    assert all("ring buffer" in why for fp in p.families.values() for _, why in fp.rejected
               if not why.startswith("not needed"))
    # a vendor kernel that backported it says so in its BTF
    f.ringbuf = True
    assert build(f).engine == "co-re"


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
    # by the refused program's name, as the loaders meet it
    program = p.families["oom_check"].programs[0]
    assert p.demote_owner(program, "R1 invalid mem access", f).to_json() == p2.to_json()
    assert p.demote_owner("no_such_program", "x", f) is None


def test_plan_is_deterministic_and_renders():
    f = facts("facts-6.18-tracepoints-only.json")
    assert build(f).to_json() == build(f).to_json()
    text = render(build(f))
    assert "oom_check: tp_btf tcp:tcp_send_reset" in text
    assert "rejected fentry tcp_check_oom: load refused (EPERM)" in text


# ------------------------------------------------------------ the bcc engine

def no_btf(name="facts-6.1-debian-vm.json"):
    """A kernel like Debian's 6.1 built without BTF, its headers installed."""
    f = facts(name)
    f.btf, f.btf_functions, f.tracepoints, f.fentry_errno = False, {}, {}, None
    f.headers = True
    f.tracefs_events = {"tcp_send_reset": True, "inet_sock_set_state": True,
                        "sock_exceed_buf_limit": True}
    return f


def test_auto_picks_bcc_where_btf_is_missing_and_headers_exist():
    f = no_btf()
    assert choose_engine(f) == "bcc"
    p = build(f, engine=choose_engine(f))
    assert p.engine == "bcc"
    oom = p.families["oom_check"]
    assert oom.method == "kprobe" and oom.target == "tcp_check_oom"
    # kprobes do not nest: one close hook, tcp_close where it exists
    assert oom.programs == ["check_oom_kprobe", "check_oom_kretprobe", "tcp_close_enter_kprobe",
                            "tcp_close_exit_kretprobe", "active_reset_kprobe"]
    for field in ("shift", "caller", "orphans", "max_orphans"):
        assert oom.fields[field][0] == "exact", field
    assert p.families["tw_overflow"].method == "kprobe"
    assert p.families["tw_overflow"].fields["verdict"][0] == "exact"
    assert p.families["mem_exceed"].method == "raw_tp"
    assert p.families["pressure"].method == "kprobe"
    assert any("bcc" in n for n in p.notes)
    # the tracepoint known from tracefs only: without it, counters only
    f.tracefs_events = {}
    assert build(f, engine="bcc").families["mem_exceed"].method == "sampled"


def test_bcc_before_58_has_no_ring_buffer_and_says_so():
    f = facts("facts-4.19-no-btf.json")
    assert not f.btf and f.headers
    assert choose_engine(f) == "bcc"
    p = build(f, engine="bcc")
    assert p.engine == "none" and not p.programs()
    assert "5.8+" in p.notes[0]
    assert dict(p.families["oom_check"].rejected)["kprobe tcp_check_oom"] == \
        "the bcc engine's BPF ring buffer needs kernel 5.8+"
    # what it would read on a 5.8+ kernel without data symbols in kallsyms
    f.release = "5.10.0-30-amd64"
    oom = build(f, engine="bcc").families["oom_check"]
    assert oom.method == "kprobe" and oom.fields["orphans"][0] == "derived"
    assert oom.fields["max_orphans"][0] == "sampled"
    assert "tcp_send_active_reset not hookable" in oom.blind_spot


def test_auto_prefers_co_re_wherever_btf_exists():
    f = facts("facts-6.1-debian-vm.json")
    f.headers = True
    assert choose_engine(f) == "co-re"
    assert choose_engine(f, "co-re") == "co-re"
    assert choose_engine(f, "bcc") == "bcc"


def test_bcc_without_headers_is_refused_in_one_line():
    f = facts("facts-6.18-tracepoints-only.json")
    assert not f.headers
    with pytest.raises(KernelUnsupported) as e:
        choose_engine(f, "bcc")
    assert "\n" not in str(e.value)
    assert f"/lib/modules/{f.release}/build" in str(e.value)
    assert f"linux-headers-{f.release}" in str(e.value)
    assert e.value.exit_code == 3


def test_neither_btf_nor_headers_is_counters_only_and_says_so():
    f = facts("facts-4.19-no-btf.json")
    f.headers = False
    assert choose_engine(f) == "co-re"
    p = build(f, engine=choose_engine(f))
    assert p.engine == "none" and not p.programs()
    assert any("no kernel headers either" in n for n in p.notes)
    with pytest.raises(KernelUnsupported):
        choose_engine(f, "bcc")


def test_bcc_on_debian_61_reads_shift_and_orphans_exactly():
    f = facts("facts-6.1-debian-vm.json")
    f.headers = True
    p = build(f, engine="bcc")
    assert p.engine == "bcc"
    oom = p.families["oom_check"]
    assert oom.method == "kprobe"
    assert {"check_oom_kprobe", "check_oom_kretprobe", "tcp_close_enter_kprobe",
            "active_reset_kprobe"} <= set(oom.programs)
    assert "close_enter_kprobe" not in oom.programs
    for field in ("shift", "orphans", "max_orphans", "memory_allocated", "tcp_mem", "caller"):
        assert oom.fields[field][0] == "exact", field
    assert p.config["orphan_cache_addr"] == f.kallsyms_data["tcp_orphan_cache"]
    assert p.config["max_orphans_addr"] == f.kallsyms_data["sysctl_tcp_max_orphans"]
    assert p.families["tw_overflow"].method == "kprobe"
    assert p.families["mem_exceed"].method == "raw_tp"
    assert p.families["mem_exceed"].target == "sock:sock_exceed_buf_limit"
    assert p.families["pressure"].method == "kprobe"
    assert "engine bcc" in render(p)


def test_bcc_without_kprobes_is_counters_only_but_for_the_raw_tracepoint():
    f = facts("facts-6.1-debian-vm.json")
    f.headers, f.kprobes = True, False
    p = build(f, engine="bcc")
    assert p.engine == "bcc"
    assert [p.families[x].method for x in FAMILY_ORDER] == ["sampled", "sampled", "raw_tp", "sampled",
                                                            "sampled"]
    assert dict(p.families["oom_check"].rejected)["kprobe tcp_check_oom"] == \
        "kernel built without CONFIG_KPROBES"


def test_a_refused_bcc_program_demotes_its_family_within_the_bcc_engine():
    f = facts("facts-6.1-debian-vm.json")
    f.headers = True
    p = build(f, engine="bcc").demote("tw_overflow", "attach failed", f)
    assert p.engine == "bcc"
    assert p.families["tw_overflow"].method == "sampled"
    assert ("kprobe inet_twsk_alloc", "attach failed") in p.families["tw_overflow"].rejected
    assert p.families["oom_check"].method == "kprobe"


def test_every_bcc_program_is_in_the_c_text_and_attaches_somewhere():
    with open(os.path.join(ROOT, "bpf", "tcpoom_bcc.c")) as src:
        defined = set(re.findall(r"^int (\w+)\(", src.read(), re.M))
    assert set(BCC_ATTACH) == defined
    f = facts("facts-6.1-debian-vm.json")
    f.headers = True
    for fixture in (f, facts("facts-4.19-no-btf.json")):
        assert set(build(fixture, engine="bcc").programs()) <= set(BCC_ATTACH)


@pytest.mark.parametrize("release,pointee,fidelity,pcc", [
    ("5.15.0-25-generic", "percpu_counter", "derived", 1),   # 5.15.0: the quick read works
    ("5.15.131", "int", "sampled", 0),                       # 5.15.16+ stable: per-CPU int
    ("6.1.0-13-amd64", "int", "sampled", 0),                 # 6.0-6.14
    ("6.14.0", "int", "sampled", 0),
    ("6.18.2", "absent", "sampled", 0),
])
def test_orphan_count_claim_follows_the_btf_type_not_the_version(release, pointee, fidelity, pcc):
    """libbpf takes any two pointers as compatible: the plan decides from the
    pointee type in BTF what the object can read (issue 13, finding 6)."""
    f = facts("facts-6.1-debian.json")
    f.release, f.orphan_count = release, pointee
    f.kallsyms_data = {}
    p = build(f)
    assert p.families["oom_check"].fields["orphans"][0] == fidelity
    assert p.config["orphan_pcc"] == pcc


def _facts_at(release):
    import json as _json
    from tracer.kernel.facts import KernelFacts
    f = KernelFacts.from_json(_json.load(open(os.path.join(DATA, "facts-6.18-tracepoints-only.json"))))
    f.release = release
    return f


@pytest.mark.parametrize("release,memcg,no_memcg", [
    ("4.19.1", True, False), ("6.6.9", True, False), ("6.8.1", True, True), ("6.12.0", True, True),
    ("6.17.9", True, True), ("6.18.1", False, True), ("6.18.2", False, False), ("6.18.44-fc", False, False),
])
def test_mem_exceed_receive_blind_spots_per_version(release, memcg, no_memcg):
    spot = plan_mod.mem_blind_spot(_facts_at(release))
    assert ("failed memory-cgroup charge" in spot) == memcg
    assert ("without a memory cgroup" in spot) == no_memcg


@pytest.mark.parametrize("release,memcg_v1,forced", [
    ("5.15.0", False, False), ("6.1.0", False, True), ("6.12.0", False, True), ("6.18.2", False, True),
    ("6.12.0", True, False),
])
def test_mem_exceed_v2_receive_charges_are_forced_past_memory_max(release, memcg_v1, forced):
    """cgroup v2, 6.1+: gfp_memcg_charge() is GFP_ATOMIC in softirq and try_charge_memcg()
    forces it past memory.max: the plan says no receive refusal comes from the memcg
    (seen in the 6.1/6.12 guests: tests/test_vm_memcg_v2.py)."""
    f = _facts_at(release)
    f.memcg_v1 = memcg_v1
    spot = plan_mod.mem_blind_spot(f)
    assert ("forced past memory.max" in spot) == forced
    assert ("memory.events max" in spot) == (forced or release < "6.18")


def test_owner_plan_on_a_tracepoint_only_kernel():
    f = _facts_at("6.18.44")
    f.tracepoints.update(sock_send_length=3, sock_recv_length=3, tcp_destroy_sock=1, tcp_rcv_space_adjust=1)
    p = plan_mod.build(f)
    assert p.owner["store"] == "sk_storage" and p.config["owner_storage"] == 1
    assert set(p.owner["programs"]) == {"owner_state_btf", "owner_send_btf", "owner_recv_btf"}
    assert p.owner["fidelity"] == "last-known"
    assert "owner_state_btf" in p.programs()
    assert p.to_json()["owner"]["store"] == "sk_storage"


def test_no_owner_env_turns_owner_tracking_off(monkeypatch):
    # TCPOOM_NO_OWNER=1: no owner program, no storage; events name their context task
    monkeypatch.setenv("TCPOOM_NO_OWNER", "1")
    f = _facts_at("6.18.44")
    f.tracepoints.update(sock_send_length=3, sock_recv_length=3, tcp_destroy_sock=1, tcp_rcv_space_adjust=1)
    p = plan_mod.build(f)
    assert p.owner["store"] == "none" and p.owner["programs"] == [] and p.config["owner_storage"] == 0
    assert p.owner["fidelity"] == "context-only" and "TCPOOM_NO_OWNER=1" in p.owner["how"]
    assert not [x for x in p.programs() if x.startswith("owner_")]


def test_owner_plan_uses_the_hash_map_where_a_program_has_no_btf_pointer():
    f = _facts_at("5.10.0")            # tp_btf, but no sk_storage from tracing programs
    f.tracepoints.update(tcp_destroy_sock=1, tcp_rcv_space_adjust=1)
    p = plan_mod.build(f)
    assert p.owner["store"] == "hash" and p.config["owner_storage"] == 0
    assert "owner_destroy_btf" in p.owner["programs"] and "owner_rcvspace_btf" in p.owner["programs"]
    assert "accepted sockets" in p.owner["blind_spot"]


def test_one_program_a_state_change_where_the_tw_inference_uses_the_tracepoint():
    # the TIME_WAIT inference's set_state program notes the owner too
    # (bpf/owner.bpf.h owner_at_set_state): owner_state_* is not loaded beside it
    from tracer.kernel.loader import Filters, Session
    f = _facts_at("6.18.44")
    f.tracepoints.update(sock_send_length=3, sock_recv_length=3, tcp_destroy_sock=1, tcp_rcv_space_adjust=1)
    p = plan_mod.build(f)
    assert p.families["tw_overflow"].programs[0] == "set_state_btf"
    s = Session(p, Filters())
    assert "set_state_btf" in s.programs and "owner_state_btf" not in s.programs
    assert s._owner_at_set_state == 1
    # without the tw_overflow family, the owner's own program is loaded
    s = Session(p, Filters(families=["oom_check"]))
    assert "owner_state_btf" in s.programs and "set_state_btf" not in s.programs
    assert s._owner_at_set_state == 0


def test_tw_inference_reads_the_ehash_with_plain_loads_where_bpf_rdonly_cast_exists():
    # 6.2+: state_cast_btf in place of set_state_btf, and it notes the owner too
    from tracer.kernel.loader import Filters, Session
    f = _facts_at("6.18.44")
    f.tracepoints.update(sock_send_length=3, sock_recv_length=3, tcp_destroy_sock=1)
    f.btf_functions["bpf_rdonly_cast"] = True
    # the ids it casts to come from the kernel's BTF: without them, the probe reads
    assert plan_mod.build(f).families["tw_overflow"].programs[0] == "set_state_btf"
    f.btf_type_ids = {"sock_common": 3, "inet_ehash_bucket": 4, "tcp_sock": 5}
    p = plan_mod.build(f)
    assert p.families["tw_overflow"].programs[0] == "state_cast_btf"
    assert (p.config["btf_id_sock_common"], p.config["btf_id_ehash_bucket"], p.config["btf_id_tcp_sock"]) == \
        (3, 4, 5)
    s = Session(p, Filters())
    assert "owner_state_btf" not in s.programs and s._owner_at_set_state == 1
    # raw_tp has no kfuncs: the probe-read program whatever the kernel
    f.denied_methods = ["tp_btf"]
    assert plan_mod.build(f).families["tw_overflow"].programs[0] == "set_state_raw"


# ------------------------------------------------------------------ mem_drop

def _drop_facts(nargs, reasons=("PROTO_MEM", "TCP_OFO_QUEUE_PRUNE", "SOCKET_BACKLOG")):
    f = facts("facts-6.18-tracepoints-only.json")
    f.tracepoints = dict(f.tracepoints, kfree_skb=nargs)
    numbers = {"PROTO_MEM": 20, "TCP_OFO_QUEUE_PRUNE": 52, "SOCKET_BACKLOG": 29}
    f.drop_reasons = {r: numbers[r] for r in reasons}
    return f


def test_mem_drop_program_matches_the_tracepoints_arguments():
    """rx_sk is kfree_skb's fourth argument from 6.11: a tp_btf program that
    declares it on a 3-argument tracepoint fails the verifier."""
    p = build(_drop_facts(4))
    fp = p.families["mem_drop"]
    assert (fp.method, fp.programs) == ("tp_btf", ["drop_btf"])
    assert fp.fields["socket"][0] == "exact"
    assert "PROTO_MEM=20" in fp.fields["verdict"][1]
    p = build(_drop_facts(3))
    fp = p.families["mem_drop"]
    assert fp.programs == ["drop3_btf"] and fp.fields["socket"][0] == "derived"
    assert "not told apart" in fp.blind_spot
    # 5.19-6.10 with tcp:tcp_probe (4.16+): the socket of an ESTABLISHED drop
    f = _drop_facts(3)
    f.tracepoints["tcp_probe"] = 2
    fp = build(f).families["mem_drop"]
    assert fp.programs == ["drop3_btf", "drop_note_btf"] and fp.fields["socket"][0] == "exact"
    assert "tcp_probe runs a program on every segment" in fp.blind_spot
    assert "OfoPruned counts prune calls" in fp.blind_spot


def test_mem_drop_without_the_reasons_is_counters_only_and_says_why():
    # 5.17-5.18: kfree_skb has a reason, but not these
    p = build(_drop_facts(3, reasons=()))
    fp = p.families["mem_drop"]
    assert fp.method == "sampled" and fp.programs == []
    assert "SKB_DROP_REASON_PROTO_MEM" in dict(fp.rejected)["tp_btf skb:kfree_skb"]
    assert "TCPRcvQDrop" in fp.target
    # before 5.17: the tracepoint has two arguments, no reason
    p = build(_drop_facts(2, reasons=()))
    assert "2 arguments, 3 needed" in dict(p.families["mem_drop"].rejected)["tp_btf skb:kfree_skb"]


def test_mem_drop_without_socket_backlog_says_so():
    fp = build(_drop_facts(4, reasons=("PROTO_MEM", "TCP_OFO_QUEUE_PRUNE"))).families["mem_drop"]
    assert fp.method == "tp_btf" and "TCPBacklogDrop counted only" in fp.blind_spot


def test_bcc_states_mem_drop_as_not_traced():
    f = _drop_facts(4)
    f.headers = True
    fp = build(f, engine="bcc").families["mem_drop"]
    assert fp.method == "sampled"
    assert "not in the bcc engine" in dict(fp.rejected)["raw_tp skb:kfree_skb"]
