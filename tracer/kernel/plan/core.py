"""The CO-RE engine's planner: per family the ranked methods of the committed
object (fentry, kprobe, tp_btf, raw_tp), relocated through the kernel's BTF."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from ..facts import CAST_TYPES, KernelFacts
from . import families as fam
from .checks import NO_RINGBUF, has_ringbuf, need_fentry, need_kprobe, need_tracepoint
from .model import Candidate, FamilyPlan, Plan, choose
from .owner import owner_plan


def _oom_candidates(f: KernelFacts) -> List[Candidate]:
    fentry_progs = ["check_oom_fentry", "check_oom_fexit"] + fam.close_companions(f.btf_functions, 0)
    kprobe_progs = ["check_oom_kprobe", "check_oom_kretprobe"] + \
        fam.close_companions(f.kallsyms_functions, 1)
    return [
        ("fentry", "tcp_check_oom", fentry_progs, lambda f: need_fentry(f, "tcp_check_oom")),
        ("kprobe", "tcp_check_oom", kprobe_progs, lambda f: need_kprobe(f, "tcp_check_oom")),
        ("kprobe", "tcp_out_of_resources", ["out_of_resources_kprobe", "out_of_resources_kretprobe"],
         lambda f: ("not needed: tcp_check_oom exists (3.3+)" if f.btf_functions.get("tcp_check_oom")
                    or f.kallsyms_functions.get("tcp_check_oom")
                    else need_kprobe(f, "tcp_out_of_resources"))),
        ("tp_btf", "tcp:tcp_send_reset", ["send_reset_btf"], _reset_check(raw=False)),
        ("raw_tp", "tcp:tcp_send_reset", ["send_reset_raw"], _reset_check(raw=True)),
    ]


def _reset_check(raw: bool) -> Callable[[KernelFacts], Optional[str]]:
    def check(f: KernelFacts) -> Optional[str]:
        why = need_tracepoint(f, "tcp_send_reset", 3, raw)
        if why:
            return why
        if f.rst_reason_abort_on_memory is None:
            return "no SK_RST_REASON_TCP_ABORT_ON_MEMORY (6.12+): memory aborts not told apart"
        return None
    return check


def _tw_candidates(f: KernelFacts) -> List[Candidate]:
    return [
        ("fentry", "inet_twsk_alloc", ["twsk_alloc_fexit"], lambda f: need_fentry(f, "inet_twsk_alloc")),
        ("kprobe", "inet_twsk_alloc", ["twsk_alloc_kprobe", "twsk_alloc_kretprobe"],
         lambda f: need_kprobe(f, "inet_twsk_alloc")),
        ("tp_btf", "sock:inet_sock_set_state", _tw_tp_programs(f, "btf"), _tw_tp_check(raw=False)),
        ("raw_tp", "sock:inet_sock_set_state", _tw_tp_programs(f, "raw"), _tw_tp_check(raw=True)),
    ]


# The tracepoint tier infers an overflow at the close and needs what follows on that
# socket to confirm or cancel it: tcp_send_reset (4.15+) cancels the closes that reset
# after TCP_CLOSE (tcp_disconnect, __tcp_close aborts, the FIN_WAIT1 abort of
# tcp_rcv_state_process) and notes the resets sent before a timer's tcp_done();
# tcp_destroy_sock cancels those whose reset could not be allocated (sk_err set).
def _tw_tp_programs(f: KernelFacts, kind: str) -> List[str]:
    progs = [set_state_program(f, kind), f"tw_reset_{kind}"]
    if f.tracepoints.get("tcp_destroy_sock") is not None:
        progs.append(f"tw_destroy_{kind}")
    # run by user space where no socket changes state (BPF_PROG_TEST_RUN of
    # raw_tp: 5.10+; before, user space confirms those itself)
    if f.version() >= (5, 10):
        progs.append("tw_settle_run")
    return progs


def set_state_program(f: KernelFacts, kind: str) -> str:
    """The inference's inet_sock_set_state program: on tp_btf where the kernel has
    the bpf_rdonly_cast kfunc (6.2+), the one that looks for the TIME_WAIT twin
    with plain loads (about 100 ns less a close than two probe reads,
    docs/performance.md); else set_state_btf / set_state_raw."""
    if kind == "btf" and f.btf_functions.get("bpf_rdonly_cast") and \
            all(f.btf_type_ids.get(t) for t in CAST_TYPES):
        return "state_cast_btf"
    return f"set_state_{kind}"


#: every inet_sock_set_state program of the TIME_WAIT inference, by kind
SET_STATE_PROGRAMS = {"btf": ("set_state_btf", "state_cast_btf"), "raw": ("set_state_raw",)}


def _tw_tp_check(raw: bool) -> Callable[[KernelFacts], Optional[str]]:
    def check(f: KernelFacts) -> Optional[str]:
        return (need_tracepoint(f, "inet_sock_set_state", 3, raw)
                or need_tracepoint(f, "tcp_send_reset", 2, raw))
    return check


def _mem_candidates(f: KernelFacts) -> List[Candidate]:
    return [
        ("tp_btf", "sock:sock_exceed_buf_limit", ["exceed_btf"],
         lambda f: need_tracepoint(f, "sock_exceed_buf_limit", 4, raw=False)),
        ("raw_tp", "sock:sock_exceed_buf_limit", ["exceed_raw"],
         lambda f: need_tracepoint(f, "sock_exceed_buf_limit", 4, raw=True)),
    ]


def _pressure_candidates(f: KernelFacts) -> List[Candidate]:
    def both(check):
        return lambda f: check(f, "tcp_enter_memory_pressure") or check(f, "tcp_leave_memory_pressure")
    return [
        ("fentry", "tcp_enter/leave_memory_pressure",
         ["enter_pressure_fentry", "enter_pressure_fexit", "leave_pressure_fentry"], both(need_fentry)),
        ("kprobe", "tcp_enter/leave_memory_pressure",
         ["enter_pressure_kprobe", "enter_pressure_kretprobe", "leave_pressure_kprobe"], both(need_kprobe)),
    ]


def _drop_check(raw: bool) -> Callable[[KernelFacts], Optional[str]]:
    def check(f: KernelFacts) -> Optional[str]:
        why = need_tracepoint(f, "kfree_skb", 3, raw)
        if why:
            return why
        missing = [r for r in fam.DROP_REASONS_NEEDED if r not in f.drop_reasons]
        if missing:
            return (f"no SKB_DROP_REASON_{missing[0]} in the kernel's BTF (5.19+): "
                    "memory drops not told apart")
        return None
    return check


def _drop_candidates(f: KernelFacts) -> List[Candidate]:
    # the program must declare no more arguments than the tracepoint has:
    # rx_sk is the fourth from 6.11
    if f.tracepoints.get("kfree_skb", 0) >= 4:
        return [("tp_btf", "skb:kfree_skb", ["drop_btf"], _drop_check(raw=False)),
                ("raw_tp", "skb:kfree_skb", ["drop_raw"], _drop_check(raw=True))]
    # before 6.11 tcp:tcp_probe names the socket of an ESTABLISHED drop
    note = f.tracepoints.get("tcp_probe", 0) >= 2
    return [("tp_btf", "skb:kfree_skb", ["drop3_btf"] + (["drop_note_btf"] if note else []),
             _drop_check(raw=False)),
            ("raw_tp", "skb:kfree_skb", ["drop3_raw"] + (["drop_note_raw"] if note else []),
             _drop_check(raw=True))]


CANDIDATES = {"oom_check": _oom_candidates, "tw_overflow": _tw_candidates,
              "mem_exceed": _mem_candidates, "pressure": _pressure_candidates,
              "mem_drop": _drop_candidates}


def build_core(f: KernelFacts, banned: Dict[str, List[Tuple[str, str]]]) -> Plan:
    fams: Dict[str, FamilyPlan] = {
        name: choose(name, f, candidates(f), banned.get(name, []), fam.SAMPLED_ONLY[name])
        for name, candidates in CANDIDATES.items()}
    oom = fams["oom_check"]
    fam.describe(f, fams)
    notes = []
    if f.btf and not has_ringbuf(f):
        notes.append(f"{NO_RINGBUF}; this is {f.release}")
    if not f.btf:
        notes.append("no BTF: the CO-RE engine cannot load; " +
                     ("kernel headers exist: the bcc engine can (--engine bcc)" if f.headers
                      else "no kernel headers either: counters only"))
    notes += fam.hz_note(f)
    any_bpf = any(fp.programs for fp in fams.values())
    config = fam.config(f, oom)
    owner = owner_plan(f, fams)
    config["owner_storage"] = 1 if owner.get("store") == "sk_storage" else 0
    config["memcg_v1"] = 1 if f.memcg_v1 else 0
    # the kernel's BTF ids state_cast_btf casts to (bpf/tw_overflow.bpf.h)
    config.update(btf_id_sock_common=f.btf_type_ids.get("sock_common", 0),
                  btf_id_ehash_bucket=f.btf_type_ids.get("inet_ehash_bucket", 0),
                  btf_id_tcp_sock=f.btf_type_ids.get("tcp_sock", 0))
    plan = Plan(f.release, "co-re" if any_bpf else "none", fams, config, notes, owner)
    plan._banned = banned
    return plan
