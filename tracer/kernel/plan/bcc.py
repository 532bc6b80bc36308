"""The bcc engine's planner: the CO-RE kprobe tier's methods and fields,
compiled against the kernel's headers instead of relocated through BTF
(bpf/tcpoom_bcc.c). One method per family, then counters only."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..facts import KernelFacts
from . import families as fam
from .checks import kprobe_target
from .model import FamilyPlan, Plan, choose
from .owner import bcc_owner

# Where the bcc engine's programs attach (bpf/tcpoom_bcc.c): kind, target.
BCC_ATTACH = {
    "check_oom_kprobe": ("kprobe", "tcp_check_oom"),
    "check_oom_kretprobe": ("kretprobe", "tcp_check_oom"),
    "tcp_close_enter_kprobe": ("kprobe", "tcp_close"),
    "tcp_close_exit_kretprobe": ("kretprobe", "tcp_close"),
    "close_enter_kprobe": ("kprobe", "__tcp_close"),
    "close_exit_kretprobe": ("kretprobe", "__tcp_close"),
    "active_reset_kprobe": ("kprobe", "tcp_send_active_reset"),
    "twsk_alloc_kprobe": ("kprobe", "inet_twsk_alloc"),
    "twsk_alloc_kretprobe": ("kretprobe", "inet_twsk_alloc"),
    "exceed_raw": ("raw_tp", "sock_exceed_buf_limit"),
    "enter_pressure_kprobe": ("kprobe", "tcp_enter_memory_pressure"),
    "enter_pressure_kretprobe": ("kretprobe", "tcp_enter_memory_pressure"),
    "leave_pressure_kprobe": ("kprobe", "tcp_leave_memory_pressure"),
}

#: the events go through a BPF ring buffer (BPF_RINGBUF_OUTPUT), as with CO-RE
BCC_MIN_VERSION = (5, 8)


def headers_path(f: KernelFacts) -> str:
    return f"/lib/modules/{f.release}/build"


def _bcc_base(f: KernelFacts) -> Optional[str]:
    if not f.headers:
        return f"no kernel headers ({headers_path(f)}): bcc compiles against them"
    if f.version() < BCC_MIN_VERSION:
        return "the bcc engine's BPF ring buffer needs kernel 5.8+"
    return None


def _bcc_kprobe(f: KernelFacts, func: str) -> Optional[str]:
    """The bcc engine's kprobe check: headers instead of BTF."""
    return _bcc_base(f) or kprobe_target(f, func)


def _bcc_raw_tp(f: KernelFacts, tp: str, since: Tuple[int, int]) -> Optional[str]:
    why = _bcc_base(f)
    if why:
        return why
    if not (f.tracefs_events.get(tp) or tp in f.tracepoints):
        return f"tracepoint {tp} not in this kernel (tracefs)"
    if f.version() < since:
        return f"its raw tracepoint arguments are those of {since[0]}.{since[1]}+"
    return None


def _both_pressure(f: KernelFacts) -> Optional[str]:
    return _bcc_kprobe(f, "tcp_enter_memory_pressure") or _bcc_kprobe(f, "tcp_leave_memory_pressure")


def _candidates(f: KernelFacts) -> dict:
    oom_progs = ["check_oom_kprobe", "check_oom_kretprobe"] + fam.close_companions(f.kallsyms_functions, 1)
    return {
        "oom_check": [("kprobe", "tcp_check_oom", oom_progs, lambda f: _bcc_kprobe(f, "tcp_check_oom"))],
        "tw_overflow": [("kprobe", "inet_twsk_alloc", ["twsk_alloc_kprobe", "twsk_alloc_kretprobe"],
                         lambda f: _bcc_kprobe(f, "inet_twsk_alloc")
                         or (None if f.version() >= (4, 1) else "the death row argument is 4.1+"))],
        "mem_exceed": [("raw_tp", "sock:sock_exceed_buf_limit", ["exceed_raw"],
                        lambda f: _bcc_raw_tp(f, "sock_exceed_buf_limit", (4, 19)))],
        "pressure": [("kprobe", "tcp_enter/leave_memory_pressure",
                      ["enter_pressure_kprobe", "enter_pressure_kretprobe", "leave_pressure_kprobe"],
                      _both_pressure)],
        # not ported to bcc: counted from TcpExt only (the CO-RE engine traces it on 5.19+)
        "mem_drop": [("raw_tp", "skb:kfree_skb", [],
                      lambda f: "not in the bcc engine: the CO-RE engine traces it (5.19+ with BTF)")],
    }


def build_bcc(f: KernelFacts, banned: Dict[str, List[Tuple[str, str]]]) -> Plan:
    fams: Dict[str, FamilyPlan] = {
        name: choose(name, f, candidates, banned.get(name, []), fam.SAMPLED_ONLY[name])
        for name, candidates in _candidates(f).items()}
    fam.describe(f, fams, bcc=True)
    notes = [f"bcc: compiled at start against {headers_path(f)}"]
    if f.version() < BCC_MIN_VERSION:
        notes.insert(0, f"the bcc engine needs kernel 5.8+ (BPF ring buffer); this is {f.release}: "
                        "counters only")
    notes += fam.hz_note(f)
    any_bpf = any(fp.programs for fp in fams.values())
    config = fam.config(f, fams["oom_check"])
    config["oom_from_resets"] = 0       # no tracepoint tier for oom_check in bcc
    plan = Plan(f.release, "bcc" if any_bpf else "none", fams, config, notes, bcc_owner(any_bpf))
    plan._banned = banned
    return plan
