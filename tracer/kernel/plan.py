"""The probe plan: per event family, the best attach method this kernel allows,
the fidelity of every field, and why each better method was rejected.

A pure function of KernelFacts: deterministic, testable without root, shown by
`tcpoom probes`, stored in recordings. Only the loader touches the kernel.
"""
from __future__ import annotations

import dataclasses
import errno as errno_mod
from typing import Callable, Dict, List, Optional, Tuple

from tracer.errors import KernelUnsupported
from tracer.model.events import TW_SETTLE_MS
from .facts import KernelFacts

EXACT, DERIVED, SAMPLED, UNAVAILABLE = "exact", "derived", "sampled", "unavailable"


@dataclasses.dataclass
class FamilyPlan:
    family: str
    method: str                       # fentry, kprobe, tp_btf, raw_tp, sampled
    target: str                       # function or tracepoint, or the /proc source
    programs: List[str]               # BPF programs to load (names in tcpoom.bpf.c)
    fields: Dict[str, Tuple[str, str]]  # field -> (fidelity, how)
    rejected: List[Tuple[str, str]]   # (method target, reason), best first
    blind_spot: str = ""              # what this method cannot see one by one


@dataclasses.dataclass
class Plan:
    kernel: str
    engine: str                       # "co-re", "bcc", or "none" (counters only)
    families: Dict[str, FamilyPlan]
    config: Dict[str, int]            # .rodata values for the loader
    notes: List[str]
    owner: Dict = dataclasses.field(default_factory=dict)   # _owner_plan(): the socket's owner

    def to_json(self) -> dict:
        return {
            "kernel": self.kernel, "engine": self.engine, "notes": self.notes,
            "config": self.config, "owner": self.owner,
            "families": {
                name: {
                    "method": fp.method, "target": fp.target, "programs": fp.programs,
                    "fields": {k: {"fidelity": v[0], "how": v[1]} for k, v in fp.fields.items()},
                    "rejected": [{"method": m, "reason": r} for m, r in fp.rejected],
                    "blind_spot": fp.blind_spot,
                } for name, fp in self.families.items()
            },
        }

    def programs(self) -> List[str]:
        out: List[str] = []
        for fp in self.families.values():
            out += [p for p in fp.programs if p not in out]
        if out:     # owner programs only serve events
            out += [p for p in self.owner.get("programs", []) if p not in out]
        return out

    def demote_owner(self, program: str, reason: str, facts: KernelFacts) -> Optional["Plan"]:
        """demote() the family that loads `program` (refused by the kernel);
        None when no family of the plan loads it."""
        family = next((f for f, fp in self.families.items() if program in fp.programs), None)
        return None if family is None else self.demote(family, reason, facts)

    def demote(self, family: str, reason: str, facts: KernelFacts) -> "Plan":
        """A new plan where `family`'s current method is rejected for `reason`
        (for instance the verifier refused it on this kernel)."""
        banned = {f: list(b) for f, b in self._banned.items()}
        banned.setdefault(family, []).append((self.families[family].method, reason))
        return build(facts, banned, engine="bcc" if self.engine == "bcc" else "co-re")

    _banned: Dict[str, List[Tuple[str, str]]] = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------ checks
# Each returns None when the method is usable, else the reason it is not.

def _errno_name(e: int) -> str:
    if e == 524:
        return "ENOTSUPP"
    return errno_mod.errorcode.get(e, str(e))


def has_ringbuf(f: KernelFacts) -> bool:
    """BPF_MAP_TYPE_RINGBUF: 5.8+, or a vendor kernel that backported it (its BTF says)."""
    return f.ringbuf if f.ringbuf is not None else f.version() >= (5, 8)


NO_RINGBUF = ("no BPF ring buffer (5.8+): every tcpoom event goes through one, so on this "
              "kernel counters only (TcpExt in /proc/net/netstat, /proc/net/sockstat)")


def _need_btf(f: KernelFacts) -> Optional[str]:
    if not f.btf:
        return "no BTF (/sys/kernel/btf/vmlinux missing): CO-RE needs it"
    if not has_ringbuf(f):
        # the object's `events` map is a ring buffer: the whole load would fail
        return NO_RINGBUF
    return None


def _need_fentry(f: KernelFacts, func: str) -> Optional[str]:
    why = _need_btf(f)
    if why:
        return why
    if not f.btf_functions.get(func):
        return f"{func} not in the kernel's BTF"
    if f.fentry_errno is None:
        return "not tried (needs root)" if not f.root else "not tried"
    if f.fentry_errno != 0:
        if f.fentry_errno == errno_mod.EPERM:
            return "load refused (EPERM)"
        return f"load refused ({_errno_name(f.fentry_errno)})"
    return None


def _kprobe_target(f: KernelFacts, func: str) -> Optional[str]:
    """Why a kprobe cannot attach to `func` on this kernel, whatever the engine."""
    if not f.kprobes:
        return "kernel built without CONFIG_KPROBES"
    if not f.kallsyms_read:
        return "kallsyms not read (needs root)"
    if not f.kallsyms_functions.get(func):
        return f"{func} not in /proc/kallsyms (inlined or absent)"
    return None


def _need_kprobe(f: KernelFacts, func: str) -> Optional[str]:
    return _need_btf(f) or _kprobe_target(f, func)


def _need_tracepoint(f: KernelFacts, tp: str, nargs: int, raw: bool) -> Optional[str]:
    why = _need_btf(f)
    if why:
        return why
    have = f.tracepoints.get(tp)
    if have is None:
        return f"tracepoint {tp} not in this kernel"
    if have < nargs:
        return f"tracepoint {tp} has {have} arguments, {nargs} needed"
    if not raw and f.version() < (5, 5):
        return "tp_btf needs kernel 5.5+"
    return None


# --------------------------------------------------------------- families

Candidate = Tuple[str, str, List[str], Callable[[KernelFacts], Optional[str]]]


def _orphan_fields(f: KernelFacts, exact_shift: bool, bcc: bool = False) -> Dict[str, Tuple[str, str]]:
    fields: Dict[str, Tuple[str, str]] = {}
    if f.kallsyms_data.get("tcp_orphan_cache"):
        fields["orphans"] = (EXACT, "tcp_orphan_cache, the 100 ms cache tcp_too_many_orphans compares")
    elif f.version() < (5, 16) and (f.btf or bcc):
        fields["orphans"] = (DERIVED, "proto.orphan_count percpu_counter quick read")
    else:
        fields["orphans"] = (SAMPLED, "tcp_orphan_cache not in kallsyms (CONFIG_KALLSYMS_ALL off): "
                                      "/proc/net/sockstat orphan, read in user space")
    if f.kallsyms_data.get("sysctl_tcp_max_orphans"):
        fields["max_orphans"] = (EXACT, "sysctl_tcp_max_orphans read at the decision")
    else:
        fields["max_orphans"] = (SAMPLED, "/proc/sys/net/ipv4/tcp_max_orphans")
    fields["memory_allocated"] = (EXACT, "sk->sk_prot->memory_allocated")
    fields["tcp_mem"] = (EXACT, "sk->sk_prot->sysctl_mem")
    return fields


# Companions of the tcp_check_oom probe, each where its function exists:
# tcp_close (sk_prot->close, never inlined) and __tcp_close (5.15+, also called
# by MPTCP) say a call comes from the close path; tcp_send_active_reset sees the
# close-path aborts whose tcp_check_oom call the compiler inlined into
# __tcp_close (a reset after sock_orphan() that is not a linger abort).
_CLOSE_COMPANIONS = (
    ("tcp_close", ("tcp_close_enter_fentry", "tcp_close_exit_fexit"),
     ("tcp_close_enter_kprobe", "tcp_close_exit_kretprobe")),
    ("__tcp_close", ("close_enter_fentry", "close_exit_fexit"),
     ("close_enter_kprobe", "close_exit_kretprobe")),
    ("tcp_send_active_reset", ("active_reset_fentry",), ("active_reset_kprobe",)),
)


def _close_companions(present: Dict[str, bool], kind: int) -> List[str]:
    """kind 0: fentry programs, 1: kprobe programs. Kprobes do not nest (see
    _KPROBE_BLIND_SPOT): every handler run in a task widens the window in which
    a softirq's probed call is missed, so the kprobe tier hooks one close
    function, tcp_close where it exists."""
    out: List[str] = []
    for func, *progs in _CLOSE_COMPANIONS:
        if kind == 1 and func == "__tcp_close" and present.get("tcp_close"):
            continue
        if present.get(func):
            out += progs[kind]
    return out


# Measured on Debian 6.12 under qemu TCG (scripts/vm): with kprobes on both
# tcp_close and __tcp_close, 3 runs in 4 of the tw_overflow lab scenario missed
# 1 or 2 of 95 overflows (inet_twsk_alloc in a softirq that ran while one of
# tcpoom's kprobe handlers was running on that CPU: neither its kprobe nor its
# kretprobe ran); with tcp_close alone, 0 in 6 runs. Rarer on real hardware,
# where a handler takes a microsecond, but possible.
_KPROBE_BLIND_SPOT = ("kprobes do not nest: a probed call made by an interrupt while one of tcpoom's "
                      "kprobe handlers runs on that CPU is missed (the kernel's kprobe nmissed); "
                      "the TcpExt counter still counts it")


def _oom_candidates(f: KernelFacts) -> List[Candidate]:
    fentry_progs = ["check_oom_fentry", "check_oom_fexit"] + _close_companions(f.btf_functions, 0)
    kprobe_progs = ["check_oom_kprobe", "check_oom_kretprobe"] + \
        _close_companions(f.kallsyms_functions, 1)
    return [
        ("fentry", "tcp_check_oom", fentry_progs, lambda f: _need_fentry(f, "tcp_check_oom")),
        ("kprobe", "tcp_check_oom", kprobe_progs, lambda f: _need_kprobe(f, "tcp_check_oom")),
        ("kprobe", "tcp_out_of_resources", ["out_of_resources_kprobe", "out_of_resources_kretprobe"],
         lambda f: ("not needed: tcp_check_oom exists (3.3+)" if f.btf_functions.get("tcp_check_oom")
                    or f.kallsyms_functions.get("tcp_check_oom")
                    else _need_kprobe(f, "tcp_out_of_resources"))),
        ("tp_btf", "tcp:tcp_send_reset", ["send_reset_btf"], _reset_check(raw=False)),
        ("raw_tp", "tcp:tcp_send_reset", ["send_reset_raw"], _reset_check(raw=True)),
    ]


def _reset_check(raw: bool) -> Callable[[KernelFacts], Optional[str]]:
    def check(f: KernelFacts) -> Optional[str]:
        why = _need_tracepoint(f, "tcp_send_reset", 3, raw)
        if why:
            return why
        if f.rst_reason_abort_on_memory is None:
            return "no SK_RST_REASON_TCP_ABORT_ON_MEMORY (6.12+): memory aborts not told apart"
        return None
    return check


def _oom_fields(f: KernelFacts, method: str, programs: List[str],
               bcc: bool = False) -> Dict[str, Tuple[str, str]]:
    fields = _orphan_fields(f, method in ("fentry", "kprobe"), bcc)
    if method in ("fentry", "kprobe") and "tcp_out_of_resources" not in "".join(programs):
        has_close = any("close_enter" in p for p in programs)
        has_reset = any(p.startswith("active_reset") for p in programs)
        fields["shift"] = (EXACT, "argument of tcp_check_oom" +
                           ("; 0 on a close-path abort seen at its reset (tcp_check_oom inlined into "
                            "__tcp_close)" if has_reset and has_close else ""))
        fields["caller"] = (EXACT, "tcp_close/__tcp_close in progress on this task, shift 0") if has_close \
            else (UNAVAILABLE, "neither tcp_close nor __tcp_close hookable")
        fields["verdict"] = (DERIVED, "return value exact; which test, recomputed from the exact fields")
    elif method == "kprobe":
        fields["shift"] = (DERIVED, "recomputed from do_reset, lsndtime and sk_err_soft as the kernel does")
        fields["caller"] = (EXACT, "timer path only")
        fields["verdict"] = (DERIVED, "recomputed")
    elif method in ("tp_btf", "raw_tp"):
        fields["shift"] = (DERIVED, "close path 0; timer path recomputed from lsndtime, sk_err_soft and "
                                    "the backed-off RTO (a lower bound once the retry budget decides)")
        fields["caller"] = (DERIVED, "TCP_CLOSE before the reset on the close path")
        fields["verdict"] = (DERIVED, "memory test recomputed; orphans implied when it is false")
    else:
        for k in ("shift", "caller", "verdict", "memory_allocated", "tcp_mem"):
            fields[k] = (UNAVAILABLE, "no per-event method")
        fields["orphans"] = (SAMPLED, "/proc/net/sockstat")
    return fields


def _tw_candidates(f: KernelFacts) -> List[Candidate]:
    return [
        ("fentry", "inet_twsk_alloc", ["twsk_alloc_fexit"], lambda f: _need_fentry(f, "inet_twsk_alloc")),
        ("kprobe", "inet_twsk_alloc", ["twsk_alloc_kprobe", "twsk_alloc_kretprobe"],
         lambda f: _need_kprobe(f, "inet_twsk_alloc")),
        ("tp_btf", "sock:inet_sock_set_state", _tw_tp_programs(f, "btf"), _tw_tp_check(raw=False)),
        ("raw_tp", "sock:inet_sock_set_state", _tw_tp_programs(f, "raw"), _tw_tp_check(raw=True)),
    ]


# The tracepoint tier infers an overflow at the close and needs what follows on that
# socket to confirm or cancel it: tcp_send_reset (4.15+) cancels the closes that reset
# after TCP_CLOSE (tcp_disconnect, __tcp_close aborts, the FIN_WAIT1 abort of
# tcp_rcv_state_process) and notes the resets sent before a timer's tcp_done();
# tcp_destroy_sock cancels those whose reset could not be allocated (sk_err set).
def _tw_tp_programs(f: KernelFacts, kind: str) -> List[str]:
    progs = [f"set_state_{kind}", f"tw_reset_{kind}"]
    if f.tracepoints.get("tcp_destroy_sock") is not None:
        progs.append(f"tw_destroy_{kind}")
    # run by user space where no socket changes state (BPF_PROG_TEST_RUN of
    # raw_tp: 5.10+; before, user space confirms those itself)
    if f.version() >= (5, 10):
        progs.append("tw_settle_run")
    return progs


def _tw_tp_check(raw: bool) -> Callable[[KernelFacts], Optional[str]]:
    def check(f: KernelFacts) -> Optional[str]:
        return (_need_tracepoint(f, "inet_sock_set_state", 3, raw)
                or _need_tracepoint(f, "tcp_send_reset", 2, raw))
    return check


def _tw_fields(method: str) -> Dict[str, Tuple[str, str]]:
    fields = {"tw_count": (EXACT, "the namespace's death row (tw_refcount - 1 on 5.19+)"),
              "max_tw_buckets": (EXACT, "death row sysctl_max_tw_buckets")}
    if method in ("fentry", "kprobe"):
        fields["verdict"] = (EXACT, "inet_twsk_alloc returned NULL")
    elif method in ("tp_btf", "raw_tp"):
        fields["verdict"] = (DERIVED, "close from FIN_WAIT/CLOSING with the FIN acked, no error, no reset "
                                      "just before, and no TIME_WAIT twin (netns, family, device, full "
                                      "addresses, ports) in the ehash bucket; confirmed when no reset "
                                      "or error follows on that socket within "
                                      f"{TW_SETTLE_MS} ms, or when its address is reused")
    else:
        fields = {k: (SAMPLED, "/proc/net/sockstat tw, TcpExt TCPTimeWaitOverflow") for k in fields}
    return fields


def _mem_candidates(f: KernelFacts) -> List[Candidate]:
    return [
        ("tp_btf", "sock:sock_exceed_buf_limit", ["exceed_btf"],
         lambda f: _need_tracepoint(f, "sock_exceed_buf_limit", 4, raw=False)),
        ("raw_tp", "sock:sock_exceed_buf_limit", ["exceed_raw"],
         lambda f: _need_tracepoint(f, "sock_exceed_buf_limit", 4, raw=True)),
    ]


def _pressure_candidates(f: KernelFacts) -> List[Candidate]:
    def both(check):
        return lambda f: check(f, "tcp_enter_memory_pressure") or check(f, "tcp_leave_memory_pressure")
    return [
        ("fentry", "tcp_enter/leave_memory_pressure", ["enter_pressure_fentry", "leave_pressure_fentry"],
         both(_need_fentry)),
        ("kprobe", "tcp_enter/leave_memory_pressure", ["enter_pressure_kprobe", "leave_pressure_kprobe"],
         both(_need_kprobe)),
    ]


_SAMPLED = {
    "oom_check": ("TcpExt TCPAbortOnMemory", "memory aborts are counted, not seen one by one"),
    "tw_overflow": ("TcpExt TCPTimeWaitOverflow", "overflows are counted, not seen one by one"),
    "mem_exceed": ("none", "refusals at tcp_mem[2] are not counted by the kernel"),
    "pressure": ("/proc/net/protocols press, TcpExt TCPMemoryPressures",
                 "enter/leave seen at the sampling period (100 ms)"),
}


def _choose(family: str, f: KernelFacts, candidates: List[Candidate],
            banned: List[Tuple[str, str]]) -> FamilyPlan:
    rejected: List[Tuple[str, str]] = []
    banned_methods = {m for m, _ in banned}
    for method, target, programs, check in candidates:
        label = f"{method} {target}"
        why = check(f)
        if why is None and method in f.denied_methods:
            why = "ruled out by TCPOOM_DENY_METHODS"
        if why is None and method in banned_methods:
            why = dict(banned)[method]
        if why:
            rejected.append((label, why))
            continue
        return FamilyPlan(family, method, target, programs, {}, rejected)
    target, blind = _SAMPLED[family]
    return FamilyPlan(family, "sampled", target, [], {}, rejected, blind)


def build(f: KernelFacts, banned: Optional[Dict[str, List[Tuple[str, str]]]] = None,
          engine: str = "co-re") -> Plan:
    """The plan of `engine` ("co-re" or "bcc"; choose_engine() settles "auto")."""
    banned = banned or {}
    if engine == "bcc":
        return _build_bcc(f, banned)
    fams: Dict[str, FamilyPlan] = {}
    oom = _choose("oom_check", f, _oom_candidates(f), banned.get("oom_check", []))
    oom.fields = _oom_fields(f, oom.method, oom.programs)
    if oom.method in ("tp_btf", "raw_tp"):
        oom.blind_spot = ("a timer-path memory abort that sends no reset (idle > 60 s, window open) "
                          "is counted by TCPAbortOnMemory only")
    elif oom.method in ("fentry", "kprobe") and oom.target == "tcp_check_oom" and \
            not any(p.startswith("active_reset") for p in oom.programs):
        oom.blind_spot = ("tcp_send_active_reset not hookable: close-path aborts are missed where "
                          "tcp_check_oom is inlined into __tcp_close")
    elif oom.method == "kprobe":
        oom.blind_spot = _KPROBE_BLIND_SPOT
    fams["oom_check"] = oom

    tw = _choose("tw_overflow", f, _tw_candidates(f), banned.get("tw_overflow", []))
    tw.fields = _tw_fields(tw.method)
    if tw.method in ("tp_btf", "raw_tp"):
        tw.blind_spot = ("inferred at the close: an abort from FIN_WAIT2 whose reset could not be "
                         "allocated looks like an overflow (bounded by TcpExt TCPAbortFailed); "
                         "closes while a namespace is dismantled are not told apart")
        if not any(p.startswith("tw_destroy_") for p in tw.programs):
            tw.blind_spot += ("; no tcp_destroy_sock tracepoint: a linger-0 abort whose reset "
                              "failed is not cancelled either")
    elif tw.method == "kprobe":
        tw.blind_spot = _KPROBE_BLIND_SPOT
    fams["tw_overflow"] = tw

    mem = _choose("mem_exceed", f, _mem_candidates(f), banned.get("mem_exceed", []))
    if mem.method == "sampled":
        mem.fields = {"memory_allocated": (SAMPLED, "/proc/net/sockstat mem"),
                      "tcp_mem": (SAMPLED, "/proc/sys/net/ipv4/tcp_mem")}
    else:
        mem.fields = {"memory_allocated": (EXACT, "the tracepoint's allocated argument"),
                      "tcp_mem": (EXACT, "prot->sysctl_mem (the tracepoint's own copy is a raw "
                                         "pointer before 5.19)"),
                      "verdict": (EXACT, "kind: send or receive side"),
                      "socket": (EXACT, "4-tuple, queues, buffers"),
                      "mem_class": (DERIVED, "memcg when the socket's memory cgroup shows the failed "
                                            "charge (v1 tcpmem_pressure, v2 a level at memory.max) or "
                                            "nothing else can have refused; else hard_limit "
                                            "(allocated > tcp_mem[2]); else fair_share (under pressure)")}
        mem.blind_spot = mem_blind_spot(f)
    fams["mem_exceed"] = mem

    pr = _choose("pressure", f, _pressure_candidates(f), banned.get("pressure", []))
    if pr.method == "sampled":
        pr.fields = {"verdict": (SAMPLED, "/proc/net/protocols press every 100 ms"),
                     "memory_allocated": (SAMPLED, "/proc/net/sockstat mem")}
    else:
        pr.fields = {"verdict": (EXACT, "the tcp_memory_pressure flag at the call"),
                     "memory_allocated": (EXACT, "sk->sk_prot->memory_allocated")}
        if pr.method == "kprobe":
            pr.blind_spot = _KPROBE_BLIND_SPOT
    fams["pressure"] = pr

    any_bpf = any(fp.programs for fp in fams.values())
    config = {
        "hz": f.hz,
        "oom_from_resets": 1 if oom.method in ("tp_btf", "raw_tp") else 0,
        "orphan_cache_addr": f.kallsyms_data.get("tcp_orphan_cache", 0),
        "max_orphans_addr": f.kallsyms_data.get("sysctl_tcp_max_orphans", 0),
    }
    notes = []
    if f.btf and not has_ringbuf(f):
        notes.append(f"{NO_RINGBUF}; this is {f.release}")
    if not f.btf:
        notes.append("no BTF: the CO-RE engine cannot load; " +
                     ("kernel headers exist: the bcc engine can (--engine bcc)" if f.headers
                      else "no kernel headers either: counters only"))
    if f.hz_source != "kconfig":
        notes.append(f"HZ={f.hz} from {f.hz_source}")
    owner = _owner_plan(f, fams)
    config["owner_storage"] = 1 if owner.get("store") == "sk_storage" else 0
    config["memcg_v1"] = 1 if f.memcg_v1 else 0
    plan = Plan(f.release, "co-re" if any_bpf else "none", fams, config, notes, owner)
    plan._banned = banned
    return plan


def _release3(f: KernelFacts) -> Tuple[int, int, int]:
    nums = []
    for p in f.release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        nums.append(int(digits or 0))
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]


def mem_blind_spot(f: KernelFacts) -> str:
    """Receive-side refusals sock:sock_exceed_buf_limit does not show, per version
    (docs/kernel-matrix.md; net/core/sock.c __sk_mem_raise_allocated): up to 6.17
    the tracepoint fires on receive only `if (charged)`, and `charged` is false
    after a failed memory-cgroup charge; from 6.7/6.8 (`charged` starts false and
    becomes true only after a successful charge) also for every socket without a
    memory cgroup. 6.18 traces receive refusals after a failed charge, and 6.18.2
    every receive refusal (read in 6.18.2; the releases in between unread)."""
    v = _release3(f)
    spots = []
    if v < (6, 18, 0):
        spots.append("receive-side refusals after a failed memory-cgroup charge are not traced "
                     "(4.19-6.17): watch memory.kmem.tcp.failcnt (v1) or memory.events max (v2)")
    if (6, 8, 0) <= v < (6, 18, 2):
        spots.append("receive-side refusals of sockets without a memory cgroup (socket accounting off, "
                     "the root cgroup, v1 without memory.kmem.tcp.limit_in_bytes) are not traced "
                     "either (6.8-6.18.1; 6.7 unread): TcpExt TCPRcvQDrop and TCPOFODrop count the drops")
    return "; ".join(spots)


# ------------------------------------------------------------------ the socket's owner

_BTF_METHODS = ("fentry", "tp_btf")


def _owner_plan(f: KernelFacts, fams: Dict[str, "FamilyPlan"]) -> Dict:
    """Where the socket's owner is noted (bpf/owner.bpf.h) and how good it is.

    The owner is noted at hooks that run in the owner's process context, and read
    at every event: the state changes only a system call makes (listen, close,
    shutdown; sock:inet_sock_set_state; not connect: a connected socket is noted at its
    first send or receive), every send and receive
    (sock:sock_send_length/sock_recv_length, 6.3+), or every read
    (tcp:tcp_rcv_space_adjust, 4.16+) where those do not exist. Store:
    bpf_sk_storage where every program that reads it gets BTF pointers (tp_btf,
    fentry) and tracing programs may use it (5.11+); it goes with the socket and
    is cloned to accepted sockets. Elsewhere a hash map keyed by the socket,
    emptied at tcp:tcp_destroy_sock."""
    users = [fp for fp in fams.values() if fp.programs]
    if not users:
        return {}
    state_btf = _need_tracepoint(f, "inet_sock_set_state", 3, raw=False) is None
    state_raw = _need_tracepoint(f, "inet_sock_set_state", 3, raw=True) is None
    if not (state_btf or state_raw):
        return {"store": "none", "programs": [], "fidelity": "context-only",
                "how": "no process-context hook (sock:inet_sock_set_state is missing): "
                       "every event names the task it ran in"}
    btf = state_btf and "tp_btf" not in f.denied_methods
    storage = btf and f.version() >= (5, 11) and all(fp.method in _BTF_METHODS for fp in users)
    kind = "btf" if btf else "raw"
    programs = [f"owner_state_{kind}"]
    seen = ["listen", "close", "shutdown"]
    io = btf and all(_need_tracepoint(f, tp, 3, raw=False) is None
                     for tp in ("sock_send_length", "sock_recv_length"))
    if io:
        programs += ["owner_send_btf", "owner_recv_btf"]
        seen.append("every send and receive")
    elif _need_tracepoint(f, "tcp_rcv_space_adjust", 1, raw=not btf) is None:
        programs.append(f"owner_rcvspace_{kind}")
        seen.append("every read (sends are not seen)")
    blind = []
    if not storage:
        if _need_tracepoint(f, "tcp_destroy_sock", 1, raw=not btf) is None:
            programs.append(f"owner_destroy_{kind}")
        else:
            blind.append("no tcp:tcp_destroy_sock: a socket's entry is dropped only when the "
                         "LRU map is full, so a reused socket address can name a former owner")
    if not storage:
        blind.append("accepted sockets are named from their first read or close, not from accept")
    blind.append("sockets opened before tcpoom started and not used since are named by the context "
                 "task (context-only)")
    return {
        "store": "sk_storage" if storage else "hash",
        "programs": programs,
        "fidelity": "last-known",
        "how": ("the process that last used the socket in process context (" + ", ".join(seen) + "), "
                "kept through orphaning; `exact` when the event runs in that process, "
                "`context-only` where none was noted"),
        "cgroups": "sk_uid, the socket's cgroup v2 id (sk_cgrp_data) and its memory cgroup (sk_memcg) "
                   "on every event: exact",
        "blind_spot": "; ".join(blind),
    }


# ------------------------------------------------------------------ engines

ENGINES = ("auto", "co-re", "bcc")


def _headers_path(f: KernelFacts) -> str:
    return f"/lib/modules/{f.release}/build"


def choose_engine(f: KernelFacts, requested: str = "auto") -> str:
    """"co-re" or "bcc" for `requested` ("auto", "co-re", "bcc").

    auto: CO-RE wherever the kernel has BTF (no compiler, millisecond start),
    bcc where it has none but its headers are installed. Where it has neither,
    auto stays with CO-RE, whose plan is then counters only and says why (the
    capture commands refuse it with exit code 3). An explicit bcc without
    headers is refused here."""
    if requested not in ENGINES:
        raise ValueError(f"unknown engine {requested!r}")
    if requested == "bcc":
        if not f.headers:
            raise KernelUnsupported(
                f"the bcc engine needs the kernel headers at {_headers_path(f)} (none here): "
                f"install linux-headers-{f.release}" + ("" if not f.btf else ", or use --engine co-re"))
        return "bcc"
    if requested == "auto" and not f.btf and f.headers:
        return "bcc"
    return "co-re"


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
    "leave_pressure_kprobe": ("kprobe", "tcp_leave_memory_pressure"),
}


#: the events go through a BPF ring buffer (BPF_RINGBUF_OUTPUT), as with CO-RE
BCC_MIN_VERSION = (5, 8)


def _bcc_base(f: KernelFacts) -> Optional[str]:
    if not f.headers:
        return f"no kernel headers ({_headers_path(f)}): bcc compiles against them"
    if f.version() < BCC_MIN_VERSION:
        return "the bcc engine's BPF ring buffer needs kernel 5.8+"
    return None


def _bcc_kprobe(f: KernelFacts, func: str) -> Optional[str]:
    """The bcc engine's kprobe check: headers instead of BTF."""
    return _bcc_base(f) or _kprobe_target(f, func)


def _bcc_raw_tp(f: KernelFacts, tp: str, since: Tuple[int, int]) -> Optional[str]:
    why = _bcc_base(f)
    if why:
        return why
    if not (f.tracefs_events.get(tp) or tp in f.tracepoints):
        return f"tracepoint {tp} not in this kernel (tracefs)"
    if f.version() < since:
        return f"its raw tracepoint arguments are those of {since[0]}.{since[1]}+"
    return None


def _build_bcc(f: KernelFacts, banned: Dict[str, List[Tuple[str, str]]]) -> Plan:
    """The bcc engine's plan: the CO-RE kprobe tier's methods and fields,
    compiled against the kernel's headers instead of relocated through BTF
    (bpf/tcpoom_bcc.c). One method per family, then counters only."""
    fams: Dict[str, FamilyPlan] = {}
    oom_progs = ["check_oom_kprobe", "check_oom_kretprobe"] + \
        _close_companions(f.kallsyms_functions, 1)
    oom = _choose("oom_check", f, [("kprobe", "tcp_check_oom", oom_progs,
                                    lambda f: _bcc_kprobe(f, "tcp_check_oom"))],
                  banned.get("oom_check", []))
    oom.fields = _oom_fields(f, oom.method, oom.programs, bcc=True)
    if oom.method == "kprobe":
        oom.blind_spot = _KPROBE_BLIND_SPOT
        if not any(p.startswith("active_reset") for p in oom.programs):
            oom.blind_spot = ("tcp_send_active_reset not hookable: close-path aborts are missed where "
                              "tcp_check_oom is inlined into __tcp_close; " + _KPROBE_BLIND_SPOT)
    fams["oom_check"] = oom

    tw = _choose("tw_overflow", f, [("kprobe", "inet_twsk_alloc", ["twsk_alloc_kprobe", "twsk_alloc_kretprobe"],
                                     lambda f: _bcc_kprobe(f, "inet_twsk_alloc")
                                     or (None if f.version() >= (4, 1) else "the death row argument is 4.1+"))],
                 banned.get("tw_overflow", []))
    tw.fields = _tw_fields(tw.method)
    if tw.method == "kprobe":
        tw.blind_spot = _KPROBE_BLIND_SPOT
    fams["tw_overflow"] = tw

    mem = _choose("mem_exceed", f, [("raw_tp", "sock:sock_exceed_buf_limit", ["exceed_raw"],
                                     lambda f: _bcc_raw_tp(f, "sock_exceed_buf_limit", (4, 19)))],
                  banned.get("mem_exceed", []))
    if mem.method == "sampled":
        mem.fields = {"memory_allocated": (SAMPLED, "/proc/net/sockstat mem"),
                      "tcp_mem": (SAMPLED, "/proc/sys/net/ipv4/tcp_mem")}
    else:
        mem.fields = {"memory_allocated": (EXACT, "the tracepoint's allocated argument"),
                      "tcp_mem": (EXACT, "prot->sysctl_mem"),
                      "verdict": (EXACT, "kind: send or receive side"),
                      "socket": (EXACT, "4-tuple, queues, buffers"),
                      "mem_class": (DERIVED, "memcg when the socket's memory cgroup shows the failed "
                                            "charge (v1 tcpmem_pressure, v2 a level at memory.max) or "
                                            "nothing else can have refused; else hard_limit "
                                            "(allocated > tcp_mem[2]); else fair_share (under pressure)")}
        mem.blind_spot = mem_blind_spot(f)
    fams["mem_exceed"] = mem

    def both(f):
        return _bcc_kprobe(f, "tcp_enter_memory_pressure") or _bcc_kprobe(f, "tcp_leave_memory_pressure")
    pr = _choose("pressure", f, [("kprobe", "tcp_enter/leave_memory_pressure",
                                  ["enter_pressure_kprobe", "leave_pressure_kprobe"], both)],
                 banned.get("pressure", []))
    if pr.method == "sampled":
        pr.fields = {"verdict": (SAMPLED, "/proc/net/protocols press every 100 ms"),
                     "memory_allocated": (SAMPLED, "/proc/net/sockstat mem")}
    else:
        pr.fields = {"verdict": (EXACT, "the tcp_memory_pressure flag at the call"),
                     "memory_allocated": (EXACT, "sk->sk_prot->memory_allocated")}
        pr.blind_spot = _KPROBE_BLIND_SPOT
    fams["pressure"] = pr

    config = {
        "hz": f.hz,
        "oom_from_resets": 0,
        "orphan_cache_addr": f.kallsyms_data.get("tcp_orphan_cache", 0),
        "max_orphans_addr": f.kallsyms_data.get("sysctl_tcp_max_orphans", 0),
    }
    notes = [f"bcc: compiled at start against {_headers_path(f)}"]
    if f.version() < BCC_MIN_VERSION:
        notes.insert(0, f"the bcc engine needs kernel 5.8+ (BPF ring buffer); this is {f.release}: "
                        "counters only")
    if f.hz_source != "kconfig":
        notes.append(f"HZ={f.hz} from {f.hz_source}")
    any_bpf = any(fp.programs for fp in fams.values())
    owner = {"store": "none", "programs": [], "fidelity": "context-only",
             "how": "the bcc engine does not track the socket's owner: every event names the task it "
                    "ran in (softirq and timer paths: whoever was interrupted)"} if any_bpf else {}
    plan = Plan(f.release, "bcc" if any_bpf else "none", fams, config, notes, owner)
    plan._banned = banned
    return plan
