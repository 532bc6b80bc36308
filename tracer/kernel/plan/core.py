"""The CO-RE engine's planner: per family the ranked methods of the committed
object (fentry, kprobe, tp_btf, raw_tp), relocated through the kernel's BTF."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from ..facts import KernelFacts
from . import families as fam
from .checks import need_fentry, need_kprobe, need_tracepoint
from .model import Candidate, FamilyPlan, Plan, choose


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
        ("tp_btf", "sock:inet_sock_set_state", ["set_state_btf"],
         lambda f: need_tracepoint(f, "inet_sock_set_state", 3, raw=False)),
        ("raw_tp", "sock:inet_sock_set_state", ["set_state_raw"],
         lambda f: need_tracepoint(f, "inet_sock_set_state", 3, raw=True)),
    ]


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


CANDIDATES = {"oom_check": _oom_candidates, "tw_overflow": _tw_candidates,
              "mem_exceed": _mem_candidates, "pressure": _pressure_candidates}


def build_core(f: KernelFacts, banned: Dict[str, List[Tuple[str, str]]]) -> Plan:
    fams: Dict[str, FamilyPlan] = {
        name: choose(name, f, candidates(f), banned.get(name, []), fam.SAMPLED_ONLY[name])
        for name, candidates in CANDIDATES.items()}
    oom, tw = fams["oom_check"], fams["tw_overflow"]
    if tw.method in fam.TRACEPOINT_TIERS and oom.method != "tp_btf" and \
            f.tracepoints.get("tcp_send_reset") is not None and f.version() >= (5, 5):
        # resets on a closing socket rule it out; the oom program notes them,
        # or a small note-only program does where oom_check uses another method
        tw.programs = tw.programs + ["reset_note_btf"]
    fam.describe(f, fams)
    notes = []
    if not f.btf:
        notes.append("no BTF: the CO-RE engine cannot load; " +
                     ("kernel headers exist: the bcc engine can (--engine bcc)" if f.headers
                      else "no kernel headers either: counters only"))
    notes += fam.hz_note(f)
    any_bpf = any(fp.programs for fp in fams.values())
    plan = Plan(f.release, "co-re" if any_bpf else "none", fams, fam.config(f, oom), notes)
    plan._banned = banned
    return plan
