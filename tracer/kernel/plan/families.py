"""Per event family, what the chosen method can say: the fidelity of each field,
the blind spot, and the loader's .rodata config. Written once for both
engines: the bcc engine runs the CO-RE kprobe tier's programs, so a method
means the same fields whichever engine compiled it."""
from __future__ import annotations

from typing import Dict, List, Tuple

from tracer.model.events import TW_SETTLE_MS
from ..facts import KernelFacts
from .model import DERIVED, EXACT, SAMPLED, UNAVAILABLE, FamilyPlan, Fields

FUNCTION_TIERS = ("fentry", "kprobe")
TRACEPOINT_TIERS = ("tp_btf", "raw_tp")

# Companions of the tcp_check_oom probe, each where its function exists:
# tcp_close (sk_prot->close, never inlined) and __tcp_close (5.15+, also called
# by MPTCP) say a call comes from the close path; tcp_send_active_reset sees the
# close-path aborts whose tcp_check_oom call the compiler inlined into
# __tcp_close (a reset after sock_orphan() that is not a linger abort).
CLOSE_COMPANIONS = (
    ("tcp_close", ("tcp_close_enter_fentry", "tcp_close_exit_fexit"),
     ("tcp_close_enter_kprobe", "tcp_close_exit_kretprobe")),
    ("__tcp_close", ("close_enter_fentry", "close_exit_fexit"),
     ("close_enter_kprobe", "close_exit_kretprobe")),
    ("tcp_send_active_reset", ("active_reset_fentry",), ("active_reset_kprobe",)),
)


def close_companions(present: Dict[str, bool], kind: int) -> List[str]:
    """kind 0: fentry programs, 1: kprobe programs. Kprobes do not nest (see
    KPROBE_BLIND_SPOT): every handler run in a task widens the window in which
    a softirq's probed call is missed, so the kprobe tier hooks one close
    function, tcp_close where it exists."""
    out: List[str] = []
    for func, *progs in CLOSE_COMPANIONS:
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
KPROBE_BLIND_SPOT = ("kprobes do not nest: a probed call made by an interrupt while one of tcpoom's "
                     "kprobe handlers runs on that CPU is missed (the kernel's kprobe nmissed); "
                     "the TcpExt counter still counts it")

#: family -> (the counters-only target, its blind spot)
SAMPLED_ONLY = {
    "oom_check": ("TcpExt TCPAbortOnMemory", "memory aborts are counted, not seen one by one"),
    "tw_overflow": ("TcpExt TCPTimeWaitOverflow", "overflows are counted, not seen one by one"),
    "mem_exceed": ("none", "refusals at tcp_mem[2] are not counted by the kernel"),
    "pressure": ("/proc/net/protocols press, TcpExt TCPMemoryPressures",
                 "enter/leave seen at the sampling period (100 ms)"),
    "mem_drop": ("TcpExt TCPRcvQDrop, TCPOFODrop, TCPBacklogDrop",
                 "memory drops are counted, not seen one by one; before 5.19 the kernel's drop "
                 "reasons do not name them"),
}


# ------------------------------------------------------------------ oom_check

def orphan_pcc(f: KernelFacts, bcc: bool = False) -> bool:
    """Whether the programs can take the percpu_counter quick read of
    proto.orphan_count (tcp_too_many_orphans' first test up to 5.15.15).

    Decided from the type the kernel's BTF gives the member, not from a CO-RE
    field check: libbpf takes any two pointers as compatible, so the
    percpu_counter flavour also "exists" where orphan_count is a per-CPU
    unsigned int (5.15.16+ stable, 6.0-6.14), and reading it there fails (x86_64)
    or returns unrelated bytes. Without BTF (bcc), 5.15 cannot be told apart by
    version: bpf/tcpoom_bcc.c checks the headers' type at compile time."""
    if f.orphan_count is not None:
        return f.orphan_count == "percpu_counter"
    if bcc:
        return f.version() < (5, 16)
    return f.btf and f.version() < (5, 15)


def orphan_fields(f: KernelFacts, bcc: bool = False) -> Fields:
    fields: Fields = {}
    if f.kallsyms_data.get("tcp_orphan_cache"):
        fields["orphans"] = (EXACT, "tcp_orphan_cache, the 100 ms cache tcp_too_many_orphans compares")
    elif orphan_pcc(f, bcc):
        how = "proto.orphan_count percpu_counter quick read"
        if bcc and f.orphan_count is None and f.version() >= (5, 15):
            how += " (where the headers' orphan_count is a percpu_counter: up to 5.15.15)"
        fields["orphans"] = (DERIVED, how)
    else:
        why = ("tcp_orphan_cache not in kallsyms (CONFIG_KALLSYMS_ALL off)"
               if f.version() >= (5, 15) or f.orphan_count in ("int", "absent")
               else "no proto.orphan_count percpu_counter")
        fields["orphans"] = (SAMPLED, why + ": /proc/net/sockstat orphan (the exact sum, "
                                            "not the kernel's 100 ms cache), read in user space")
    if f.kallsyms_data.get("sysctl_tcp_max_orphans"):
        fields["max_orphans"] = (EXACT, "sysctl_tcp_max_orphans read at the decision")
    else:
        fields["max_orphans"] = (SAMPLED, "/proc/sys/net/ipv4/tcp_max_orphans")
    fields["memory_allocated"] = (EXACT, "sk->sk_prot->memory_allocated")
    fields["tcp_mem"] = (EXACT, "sk->sk_prot->sysctl_mem")
    return fields


def _memory_when(method: str, programs: List[str]) -> str:
    """When the oom_check programs read memory_allocated (issue 13, finding 7)."""
    if method in FUNCTION_TIERS and "tcp_out_of_resources" not in "".join(programs):
        return ("sk->sk_prot->memory_allocated at tcp_check_oom's entry, next to the orphan count "
                "(the figure tcp_out_of_memory compares)")
    if method == "kprobe":
        return "sk->sk_prot->memory_allocated at tcp_out_of_resources' return, after the decision"
    return "sk->sk_prot->memory_allocated at the reset, after the decision"


def oom_fields(f: KernelFacts, method: str, programs: List[str], bcc: bool = False) -> Fields:
    fields = orphan_fields(f, bcc)
    if method in FUNCTION_TIERS and "tcp_out_of_resources" not in "".join(programs):
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
    elif method in TRACEPOINT_TIERS:
        fields["shift"] = (DERIVED, "close path 0; timer path recomputed as tcp_out_of_resources does, "
                                    "from lsndtime and sk_err_soft: do_reset is true on the probe timer "
                                    "(nothing in flight) and on the retransmit timer while icsk_rto (already "
                                    "backed off) is below rto_max, or when the reset came more than 60 s "
                                    "after the last send; a lower bound only when none of these decides")
        fields["caller"] = (DERIVED, "TCP_CLOSE before the reset on the close path")
        fields["verdict"] = (DERIVED, "memory test recomputed; orphans implied when it is false")
    else:
        for k in ("shift", "caller", "verdict", "memory_allocated", "tcp_mem"):
            fields[k] = (UNAVAILABLE, "no per-event method")
        fields["orphans"] = (SAMPLED, "/proc/net/sockstat")
        return fields
    fields["memory_allocated"] = (EXACT, _memory_when(method, programs))
    return fields


def oom_blind_spot(oom: FamilyPlan) -> str:
    if oom.method in TRACEPOINT_TIERS:
        return ("a timer-path memory abort that sends no reset (idle > 60 s, window open) "
                "is counted by TCPAbortOnMemory only")
    spots = []
    if oom.method in FUNCTION_TIERS and oom.target == "tcp_check_oom" and \
            not any(p.startswith("active_reset") for p in oom.programs):
        spots.append("tcp_send_active_reset not hookable: close-path aborts are missed where "
                     "tcp_check_oom is inlined into __tcp_close")
    if oom.method == "kprobe":
        spots.append(KPROBE_BLIND_SPOT)
    return "; ".join(spots)


# ---------------------------------------------------------------- tw_overflow

def tw_fields(method: str) -> Fields:
    fields = {"tw_count": (EXACT, "the namespace's death row (tw_refcount - 1 on 5.19+)"),
              "max_tw_buckets": (EXACT, "death row sysctl_max_tw_buckets")}
    if method in FUNCTION_TIERS:
        fields["verdict"] = (EXACT, "inet_twsk_alloc returned NULL")
    elif method in TRACEPOINT_TIERS:
        fields["verdict"] = (DERIVED, "close from FIN_WAIT/CLOSING with the FIN acked, no error, no reset "
                                      "just before, and no TIME_WAIT twin (netns, family, device, full "
                                      "addresses, ports) in the ehash bucket; confirmed when no reset "
                                      "or error follows on that socket within "
                                      f"{TW_SETTLE_MS} ms, or when its address is reused")
    else:
        fields = {k: (SAMPLED, "/proc/net/sockstat tw, TcpExt TCPTimeWaitOverflow") for k in fields}
    return fields


def tw_blind_spot(tw: FamilyPlan) -> str:
    if tw.method in TRACEPOINT_TIERS:
        spot = ("inferred at the close: an abort from FIN_WAIT2 whose reset could not be "
                "allocated looks like an overflow (bounded by TcpExt TCPAbortFailed); "
                "closes while a namespace is dismantled are not told apart")
        if not any(p.startswith("tw_destroy_") for p in tw.programs):
            spot += ("; no tcp_destroy_sock tracepoint: a linger-0 abort whose reset "
                     "failed is not cancelled either")
        return spot
    if tw.method == "kprobe":
        return KPROBE_BLIND_SPOT
    return ""


# ----------------------------------------------------------------- mem_exceed

def mem_fields(method: str) -> Fields:
    if method == "sampled":
        return {"memory_allocated": (SAMPLED, "/proc/net/sockstat mem"),
                "tcp_mem": (SAMPLED, "/proc/sys/net/ipv4/tcp_mem")}
    return {"memory_allocated": (EXACT, "the tracepoint's allocated argument"),
            "tcp_mem": (EXACT, "prot->sysctl_mem (the tracepoint's own copy is a raw "
                               "pointer before 5.19)"),
            "verdict": (EXACT, "kind: send or receive side"),
            "socket": (EXACT, "4-tuple, queues, buffers"),
            "mem_class": (DERIVED, "memcg when the socket's memory cgroup shows the failed "
                                   "charge (v1 tcpmem_pressure, v2 a level at memory.max) or "
                                   "nothing else can have refused; else hard_limit "
                                   "(allocated > tcp_mem[2]); else fair_share (under pressure)")}


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
    if not f.memcg_v1 and v >= (6, 1, 0):
        # include/net/sock.h gfp_memcg_charge(): GFP_ATOMIC in softirq from 6.1
        # (GFP_NOWAIT in 5.15; 6.0 unread), and try_charge_memcg() forces an
        # __GFP_HIGH charge past memory.max instead of failing it
        spots.append("cgroup v2: a receive-side charge in softirq is never refused by the memory "
                     "cgroup: it is forced past memory.max (GFP_ATOMIC, 6.1+) and counted in "
                     "memory.events max, so a slow reader's cgroup goes over its limit instead")
    if (6, 8, 0) <= v < (6, 18, 2):
        spots.append("receive-side refusals of sockets without a memory cgroup (socket accounting off, "
                     "the root cgroup, v1 without memory.kmem.tcp.limit_in_bytes) are not traced "
                     "either (6.8-6.18.1; 6.7 unread): TcpExt TCPRcvQDrop and TCPOFODrop count the drops")
    return "; ".join(spots)


# ------------------------------------------------------------------- mem_drop

#: the drop reasons the family cannot do without (SOCKET_BACKLOG is optional)
DROP_REASONS_NEEDED = ("PROTO_MEM", "TCP_OFO_QUEUE_PRUNE")


def drop_fields(f: KernelFacts, method: str, programs: List[str]) -> Fields:
    if method == "sampled":
        return {"verdict": (SAMPLED, "TcpExt TCPRcvQDrop, TCPOFODrop, TCPBacklogDrop deltas")}
    fields: Fields = {"verdict": (EXACT, "the drop reason (number from the kernel's BTF: " +
                                  ", ".join(f"{k}={v}" for k, v in sorted(f.drop_reasons.items())) + ")")}
    if any(p in ("drop_btf", "drop_raw") for p in programs):
        fields["verdict"] = (EXACT, fields["verdict"][1] + "; PROTO_MEM split in-order (tcp_data_queue, "
                                    "TCPRcvQDrop) or out-of-order (tcp_data_queue_ofo, TCPOFODrop) by "
                                    "the segment's seq against rcv_nxt")
        fields["socket"] = (EXACT, "rx_sk: 4-tuple, queues, buffers at the drop")
        fields["memory_allocated"] = (EXACT, "sk->sk_prot->memory_allocated at the drop")
        fields["mem_class"] = (DERIVED, "rcvbuf when rmem_alloc + len > sk_rcvbuf (a full receive "
                                        "buffer); else classified as mem_exceed's refusals")
    elif any(p.startswith("drop_note_") for p in programs):
        fields["verdict"] = (EXACT, fields["verdict"][1] + "; PROTO_MEM split in-order or out-of-order "
                                    "where the socket is known")
        fields["socket"] = (EXACT, "no rx_sk before 6.11: the socket tcp:tcp_probe noted for that skb on "
                                   "that CPU (drops of ESTABLISHED sockets), a pruned skb's owner (skb->sk); "
                                   "else the 4-tuple from the segment's headers, namespace unknown; "
                                   "the owner is the last one noted in a hash map (with sk_storage: "
                                   "context-only), and --pid matches no drop")
        fields["memory_allocated"] = (EXACT, "sk->sk_prot->memory_allocated where the socket is known")
        fields["mem_class"] = (DERIVED, "as from 6.11, where the socket is known")
    else:
        fields["socket"] = (DERIVED, "4-tuple from the segment's IP and TCP headers, netns unknown "
                                     "(no rx_sk before 6.11, and no tcp_probe tracepoint); pruned skbs: their "
                                     "owning socket (skb->sk)")
        fields["memory_allocated"] = (UNAVAILABLE, "no socket before 6.11 (except pruned skbs)")
    return fields


def drop_blind_spot(f: KernelFacts, dr: FamilyPlan) -> str:
    spots = ["OfoPruned counts prune calls, not the skbs each call drops: pruned skbs are "
             "shown, never compared",
             "TCPRcvQDrop also counts TCP_REPAIR queue refusals (no drop reason)"]
    if "SOCKET_BACKLOG" not in f.drop_reasons:
        spots.append("no SKB_DROP_REASON_SOCKET_BACKLOG: TCPBacklogDrop counted only")
    if any(p.startswith("drop3_") for p in dr.programs):
        who = ("a drop outside tcp_rcv_established (a socket not ESTABLISHED, a full backlog, a "
               "softirq that replaced tcp_probe's note during backlog processing)"
               if any(p.startswith("drop_note_") for p in dr.programs) else "every drop but pruning")
        spots.append(f"before 6.11 (no rx_sk), {who} has no socket: the flow from the headers, "
                     "the namespace unknown (tcp_v4_rcv clears skb->dev, tcp_data_queue drops the "
                     "route), so --netns and --pid count it as filtered, and in-order and "
                     "out-of-order PROTO_MEM drops are not told apart (rcvq_or_ofo)")
        if any(p.startswith("drop_note_") for p in dr.programs):
            spots.append("tcp:tcp_probe runs a program on every segment an ESTABLISHED socket "
                         "receives (a per-CPU note: a few instructions)")
    return "; ".join(spots)


# ------------------------------------------------------------------- pressure

def pressure_fields(method: str) -> Fields:
    if method == "sampled":
        return {"verdict": (SAMPLED, "/proc/net/protocols press every 100 ms"),
                "memory_allocated": (SAMPLED, "/proc/net/sockstat mem")}
    return {"verdict": (EXACT, "one enter and one leave per episode: the tcp_memory_pressure value "
                               "a call set (enter, at its return) or cleared (leave), recorded once "
                               "with an atomic map insert, so racing callers report it once"),
            "cause": (DERIVED, "enter: memory_allocated above tcp_mem[1] at the call is the limit; at "
                               "or below it, a page-fragment or skb allocation failed (or MPTCP)"),
            "memory_allocated": (EXACT, "sk->sk_prot->memory_allocated at the call's entry")}


def pressure_blind_spot(pr: FamilyPlan) -> str:
    return KPROBE_BLIND_SPOT if pr.method == "kprobe" else ""


# -------------------------------------------------------------------- all five

def describe(f: KernelFacts, fams: Dict[str, FamilyPlan], bcc: bool = False) -> None:
    """Fill each chosen family's fields and blind spot."""
    oom, tw, mem, pr = (fams[k] for k in ("oom_check", "tw_overflow", "mem_exceed", "pressure"))
    oom.fields = oom_fields(f, oom.method, oom.programs, bcc)
    oom.blind_spot = oom.blind_spot or oom_blind_spot(oom)
    tw.fields = tw_fields(tw.method)
    tw.blind_spot = tw.blind_spot or tw_blind_spot(tw)
    mem.fields = mem_fields(mem.method)
    if mem.method != "sampled":
        mem.blind_spot = mem_blind_spot(f)
    pr.fields = pressure_fields(pr.method)
    pr.blind_spot = pr.blind_spot or pressure_blind_spot(pr)
    dr = fams.get("mem_drop")
    if dr is not None:
        dr.fields = drop_fields(f, dr.method, dr.programs)
        if dr.method != "sampled":
            dr.blind_spot = drop_blind_spot(f, dr)


def config(f: KernelFacts, oom: FamilyPlan) -> Dict[str, int]:
    """The .rodata values the loader sets (both engines' programs read them)."""
    return {
        "hz": f.hz,
        "oom_from_resets": 1 if oom.method in TRACEPOINT_TIERS else 0,
        "orphan_cache_addr": f.kallsyms_data.get("tcp_orphan_cache", 0),
        # 1: proto.orphan_count is a percpu_counter (BTF says so): read its count
        "orphan_pcc": 1 if orphan_pcc(f) else 0,
        "max_orphans_addr": f.kallsyms_data.get("sysctl_tcp_max_orphans", 0),
    }


def hz_note(f: KernelFacts) -> List[str]:
    return [f"HZ={f.hz} from {f.hz_source}"] if f.hz_source != "kconfig" else []
