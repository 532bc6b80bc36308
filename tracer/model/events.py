"""The Python mirror of bpf/tcpoom.h: the event record and its constants.

tests/test_layout.py checks every size and offset here against the compiled
object's BTF, and every constant against the header's text.
"""
from __future__ import annotations

import struct
from _socket import inet_ntop as _inet_ntop  # the C module: socket.py costs ~10 ms at start-up
from typing import Dict, List, Optional, Tuple

# family
OOM_CHECK, TW_OVERFLOW, MEM_EXCEED, PRESSURE, MEM_DROP = 1, 2, 3, 4, 5
FAMILIES: Dict[int, str] = {OOM_CHECK: "oom_check", TW_OVERFLOW: "tw_overflow",
                            MEM_EXCEED: "mem_exceed", PRESSURE: "pressure", MEM_DROP: "mem_drop"}
FAMILY_IDS = {v: k for k, v in FAMILIES.items()}

# method
FENTRY, KPROBE, TP_BTF, RAW_TP, SAMPLED = 1, 2, 3, 4, 5
METHODS: Dict[int, str] = {FENTRY: "fentry", KPROBE: "kprobe", TP_BTF: "tp_btf",
                           RAW_TP: "raw_tp", SAMPLED: "sampled"}

# verdict bits
VERDICT_ORPHANS = 0x0001
VERDICT_MEMORY = 0x0002
VERDICT_KILLED = 0x0004
VERDICT_RESET = 0x0008
VERDICT_SHIFT_MIN = 0x0010
VERDICT_SEND = 0x0100
VERDICT_RECV = 0x0200
VERDICT_ENTER = 0x1000
VERDICT_LEAVE = 0x2000
VERDICT_CAUSE_LIMIT = 0x4000     # pressure entered with memory_allocated above tcp_mem[1]
VERDICT_CAUSE_ALLOC = 0x8000     # ... at or below it: a page or skb allocation failed
# mem_drop: the site (one of four) and the cause
VERDICT_DROP_RCVQ = 0x0020       # PROTO_MEM in tcp_data_queue (TCPRcvQDrop)
VERDICT_DROP_OFO = 0x0040        # PROTO_MEM in tcp_data_queue_ofo (TCPOFODrop)
VERDICT_DROP_PRUNE = 0x0080      # TCP_OFO_QUEUE_PRUNE (OfoPruned counts calls)
VERDICT_DROP_BACKLOG = 0x0400    # SOCKET_BACKLOG in tcp_add_backlog (TCPBacklogDrop)
VERDICT_DROP_RCVBUF = 0x0800     # the receive buffer was full (not a refused charge)

# caller
CALLER_UNKNOWN, CALLER_CLOSE, CALLER_TIMER = 0, 1, 2
CALLERS = {CALLER_UNKNOWN: "?", CALLER_CLOSE: "close", CALLER_TIMER: "timer"}

# field bits (exact / derived masks)
FIELD_SHIFT = 1 << 0
FIELD_ORPHANS = 1 << 1
FIELD_MAX_ORPHANS = 1 << 2
FIELD_MEMORY = 1 << 3
FIELD_TCP_MEM = 1 << 4
FIELD_TW_COUNT = 1 << 5
FIELD_MAX_TW = 1 << 6
FIELD_VERDICT = 1 << 7
FIELD_CALLER = 1 << 8
FIELD_SOCKET = 1 << 9
FIELD_PRESSURE = 1 << 10
FIELD_MEM_CLASS = 1 << 11
FIELD_OWNER = 1 << 12
FIELDS = {"shift": FIELD_SHIFT, "orphans": FIELD_ORPHANS, "max_orphans": FIELD_MAX_ORPHANS,
          "memory_allocated": FIELD_MEMORY, "tcp_mem": FIELD_TCP_MEM,
          "tw_count": FIELD_TW_COUNT, "max_tw_buckets": FIELD_MAX_TW,
          "verdict": FIELD_VERDICT, "caller": FIELD_CALLER, "socket": FIELD_SOCKET,
          "pressure_since": FIELD_PRESSURE, "mem_class": FIELD_MEM_CLASS, "owner": FIELD_OWNER}

# owner_fidelity: how the socket's owner was known (bpf/owner.bpf.h)
OWNER_NONE, OWNER_EXACT, OWNER_LAST_KNOWN, OWNER_CONTEXT = 0, 1, 2, 3
OWNER_FIDELITY = {OWNER_NONE: "none", OWNER_EXACT: "exact", OWNER_LAST_KNOWN: "last-known",
                  OWNER_CONTEXT: "context-only"}

# mem_class: why __sk_mem_raise_allocated refused (bpf/mem_class.bpf.h)
MEM_CLASS_UNKNOWN, MEM_CLASS_MEMCG, MEM_CLASS_FAIR_SHARE, MEM_CLASS_HARD = 0, 1, 2, 3
MEM_CLASSES = {MEM_CLASS_UNKNOWN: "unknown", MEM_CLASS_MEMCG: "memcg",
               MEM_CLASS_FAIR_SHARE: "fair_share", MEM_CLASS_HARD: "hard_limit"}

# per-CPU counter slots
CNT_OOM_CHECK = 0
CNT_OOM_ORPHANS = 1
CNT_OOM_MEMORY = 2
CNT_OOM_CLOSE = 3
CNT_OOM_TIMER = 4
CNT_OOM_RESET = 5
CNT_OOM_CALLS = 6
CNT_TW_OVERFLOW = 7
CNT_TW_CLOSES = 8
CNT_MEM_EXCEED = 9
CNT_MEM_SEND = 10
CNT_MEM_RECV = 11
CNT_PRESSURE_ENTER = 12
CNT_PRESSURE_LEAVE = 13
CNT_FILTERED = 14
CNT_LOST_BASE = 16
FAMILY_MAX = 6
CNT_LOST_END = CNT_LOST_BASE + FAMILY_MAX    # lost slots: [CNT_LOST_BASE, CNT_LOST_END)
# tracepoint tier of tw_overflow: closes that looked like overflows, those a later
# reset or error cancelled, those confirmed at once because the pending table was full
CNT_TW_CANDIDATES = 24
CNT_TW_CANCELLED = 25
CNT_TW_UNCHECKED = 26
# kprobe tiers: + family (1..4, slots 28..31): a return that found no entry
CNT_UNPAIRED_BASE = 27
CNT_UNPAIRED_END = CNT_UNPAIRED_BASE + FAMILY_MAX  # unpaired slots: [CNT_UNPAIRED_BASE, CNT_UNPAIRED_END)
# mem_drop: the family's count (PROTO_MEM and SOCKET_BACKLOG drops), then by site
CNT_MEM_DROP = 33
CNT_DROP_RCVQ = 34
CNT_DROP_OFO = 35
CNT_DROP_BACKLOG = 36
CNT_DROP_PRUNE = 37
CNT_DROP_UNSPLIT = 38
CNT_MAX = 40
# a TIME_WAIT candidate with no reset or error on its socket for this long is an overflow
TW_SETTLE_MS = 200
COUNTER_NAMES = {
    CNT_OOM_CHECK: "oom_check", CNT_OOM_ORPHANS: "oom_check.orphans",
    CNT_OOM_MEMORY: "oom_check.memory", CNT_OOM_CLOSE: "oom_check.close",
    CNT_OOM_TIMER: "oom_check.timer", CNT_OOM_RESET: "oom_check.reset",
    CNT_OOM_CALLS: "oom_check.calls", CNT_TW_OVERFLOW: "tw_overflow",
    CNT_TW_CLOSES: "tw_overflow.closes_examined", CNT_MEM_EXCEED: "mem_exceed",
    CNT_MEM_SEND: "mem_exceed.send", CNT_MEM_RECV: "mem_exceed.recv",
    CNT_PRESSURE_ENTER: "pressure.enter", CNT_PRESSURE_LEAVE: "pressure.leave",
    CNT_FILTERED: "filtered",
    CNT_TW_CANDIDATES: "tw_overflow.candidates", CNT_TW_CANCELLED: "tw_overflow.cancelled",
    CNT_TW_UNCHECKED: "tw_overflow.unchecked",
    CNT_MEM_DROP: "mem_drop", CNT_DROP_RCVQ: "mem_drop.rcvq", CNT_DROP_OFO: "mem_drop.ofo",
    CNT_DROP_BACKLOG: "mem_drop.backlog", CNT_DROP_PRUNE: "mem_drop.pruned",
    CNT_DROP_UNSPLIT: "mem_drop.rcvq_or_ofo",
}
for _fam, _name in FAMILIES.items():
    COUNTER_NAMES[CNT_LOST_BASE + _fam] = f"lost.{_name}"
    COUNTER_NAMES[CNT_UNPAIRED_BASE + _fam] = f"unpaired.{_name}"

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT",
              9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}

# struct tcpoom_event, member by member: (name, struct code)
LAYOUT: List[Tuple[str, str]] = [
    ("ts_ns", "Q"), ("skaddr", "Q"), ("netns", "I"), ("pid", "I"), ("tid", "I"),
    ("cpu", "H"), ("family", "B"), ("method", "B"), ("comm", "16s"),
    ("af", "H"), ("sport", "H"), ("dport", "H"), ("state", "B"), ("caller", "B"),
    ("saddr", "16s"), ("daddr", "16s"),
    ("memory_allocated", "q"), ("tcp_mem", "3q"), ("pressure_since", "q"),
    ("orphans", "i"), ("max_orphans", "i"), ("shift", "i"), ("wmem_queued", "i"),
    ("rmem_alloc", "i"), ("sndbuf", "i"), ("rcvbuf", "i"), ("tw_count", "i"),
    ("max_tw_buckets", "i"), ("verdict", "H"), ("reason", "H"), ("exact", "I"),
    ("derived", "I"),
    # the socket's owner and cgroups (issue 14), at the end: older readers skip them
    ("sk_cgroup", "Q"), ("memcg", "Q"), ("owner_cgroup", "Q"), ("cgroup", "Q"),
    ("memcg_usage", "q"), ("memcg_limit", "q"),
    ("owner_pid", "I"), ("owner_uid", "I"), ("sk_uid", "I"),
    ("owner_fidelity", "B"), ("mem_class", "B"), ("spare", "H"), ("owner_comm", "16s"),
]
EVENT_STRUCT = struct.Struct("<" + "".join(code for _, code in LAYOUT))
EVENT_SIZE = EVENT_STRUCT.size
# Batches of events in memory and in files keep the ring buffer's framing:
# each record follows its 8-byte ring header, FRAME + EVENT_SIZE rounded up to
# 8 bytes apart. The recorder can then copy the ring buffer's committed span
# as it is, in one piece.
FRAME = 8
STRIDE = (FRAME + EVENT_SIZE + 7) & ~7
_FRAME_HEAD = struct.Struct("<II")
# record sizes of earlier versions of the layout, each a prefix of today's
OLDER_SIZES = (176,)     # 1.0: up to `derived`


def widen(records, size: int, count: int, stride: int, skip: int) -> bytes:
    """Records of an earlier, shorter layout re-framed as today's (the fields
    added since are zero: owner unknown, cgroups unknown)."""
    tail = b"\0" * (STRIDE - FRAME - size)
    head = _FRAME_HEAD.pack(EVENT_SIZE, 0)
    return b"".join(head + bytes(records[i * stride + skip:i * stride + skip + size]) + tail
                    for i in range(count))


def frame(record: bytes) -> bytes:
    """One record made in user space, framed like the ring buffer's."""
    return _FRAME_HEAD.pack(len(record), 0) + record + b"\0" * (STRIDE - FRAME - len(record))


def frame_all(records: list) -> bytes:
    return b"".join(frame(r) for r in records)


def at(i: int) -> int:
    """Offset of the i-th record of a framed batch."""
    return i * STRIDE + FRAME


def layout_offsets() -> Dict[str, int]:
    """Byte offset of every member, as the mirror lays it out."""
    out, fmt = {}, "<"
    for name, code in LAYOUT:
        out[name] = struct.calcsize(fmt)
        fmt += code
    return out


# names of the flat tuple that EVENT_STRUCT.unpack returns (tcp_mem is 3 values)
_FLAT: List[str] = []
for _name, _code in LAYOUT:
    if _code == "3q":
        _FLAT += [f"{_name}{i}" for i in range(3)]
    else:
        _FLAT.append(_name)
FLAT_NAMES: Tuple[str, ...] = tuple(_FLAT)
# a framed batch unpacked in one pass (Struct.iter_unpack): each record's flat
# values, its ring header and padding skipped
FRAMED_STRUCT = struct.Struct(f"<{FRAME}x" + "".join(code for _, code in LAYOUT) +
                              f"{STRIDE - FRAME - EVENT_SIZE}x")


class Event:
    """One decoded record. Built on the display path only; recording copies
    raw records without making one of these per event."""

    __slots__ = tuple(_FLAT)

    # __init__(self, values) is made below: one tuple unpacking into every
    # slot, four times faster than a loop of setattr (the display paths,
    # `trace` above all, decode every record of a storm)

    @classmethod
    def decode(cls, buf, offset: int = 0) -> "Event":
        return cls(EVENT_STRUCT.unpack_from(buf, offset))

    @classmethod
    def make(cls, **fields) -> "Event":
        """A record built in user space (sampled methods, tests)."""
        defaults = dict.fromkeys(_FLAT, 0)
        for k in ("memory_allocated", "tcp_mem0", "tcp_mem1", "tcp_mem2", "pressure_since",
                  "orphans", "max_orphans", "shift", "wmem_queued", "rmem_alloc", "sndbuf",
                  "rcvbuf", "tw_count", "max_tw_buckets", "memcg_usage", "memcg_limit"):
            defaults[k] = -1
        defaults["comm"] = defaults["owner_comm"] = b""
        defaults["saddr"] = defaults["daddr"] = b"\0" * 16
        if "tcp_mem" in fields:
            for i, v in enumerate(fields.pop("tcp_mem")):
                defaults[f"tcp_mem{i}"] = v
        defaults.update(fields)
        return cls(tuple(defaults[n] for n in _FLAT))

    def pack(self) -> bytes:
        return EVENT_STRUCT.pack(*(getattr(self, n) for n in _FLAT))

    # ------------------------------------------------------------ views
    @property
    def family_name(self) -> str:
        return FAMILIES.get(self.family, f"family{self.family}")

    @property
    def method_name(self) -> str:
        return METHODS.get(self.method, f"method{self.method}")

    @property
    def tcp_mem(self) -> Tuple[int, int, int]:
        return (self.tcp_mem0, self.tcp_mem1, self.tcp_mem2)

    @property
    def comm_str(self) -> str:
        return self.comm.split(b"\0", 1)[0].decode(errors="replace")

    @property
    def owner_comm_str(self) -> str:
        return self.owner_comm.split(b"\0", 1)[0].decode(errors="replace")

    @property
    def owner_fidelity_name(self) -> str:
        return OWNER_FIDELITY.get(self.owner_fidelity, "none")

    @property
    def mem_class_name(self) -> str:
        return MEM_CLASSES.get(self.mem_class, "unknown")

    @property
    def who_pid(self) -> int:
        """The socket's owner where one is known, else the context task."""
        return self.owner_pid if self.owner_fidelity else self.pid

    @property
    def who_comm(self) -> str:
        return self.owner_comm_str if self.owner_fidelity else self.comm_str

    @property
    def who_cgroup(self) -> int:
        """cgroup v2 id of the owner (when noted), else of the socket, else of the context."""
        return self.owner_cgroup or self.sk_cgroup or self.cgroup

    @property
    def state_name(self) -> str:
        return TCP_STATES.get(self.state, str(self.state))

    @property
    def caller_name(self) -> str:
        return CALLERS.get(self.caller, "?")

    def _addr(self, raw: bytes) -> Optional[str]:
        if self.af == 2:      # AF_INET: inet_ntop writes what ipaddress does, 5x faster
            return _inet_ntop(2, raw[:4])
        import ipaddress        # for display only: kept off the start-up path
        if self.af == 10:     # AF_INET6
            return str(ipaddress.IPv6Address(raw))
        return None

    def _endpoint(self, raw: bytes, port: int) -> str:
        if self.af == 2:      # the common case first: one call, no checks
            return f"{_inet_ntop(2, raw[:4])}:{port}"
        a = self._addr(raw)
        if a is None:
            return "-"
        return f"[{a}]:{port}" if ":" in a else f"{a}:{port}"

    @property
    def local(self) -> str:
        return self._endpoint(self.saddr, self.sport)

    @property
    def remote(self) -> str:
        return self._endpoint(self.daddr, self.dport)

    def fidelity(self, field: str) -> str:
        """exact, derived or unavailable, as the kernel side marked it."""
        bit = FIELDS[field]
        if self.exact & bit:
            return "exact"
        if self.derived & bit:
            return "derived"
        return "unavailable"

    def verdict_names(self) -> List[str]:
        v, out = self.verdict, []
        if self.family == OOM_CHECK:
            if v & VERDICT_ORPHANS:
                out.append("too_many_orphans")
            if v & VERDICT_MEMORY:
                out.append("out_of_memory")
        elif self.family == MEM_EXCEED:
            out.append("recv" if v & VERDICT_RECV else "send")
        elif self.family == PRESSURE:
            out.append("enter" if v & VERDICT_ENTER else "leave")
            if v & VERDICT_CAUSE_LIMIT:
                out.append("above_tcp_mem1")
            elif v & VERDICT_CAUSE_ALLOC:
                out.append("allocation_failure")
        elif self.family == TW_OVERFLOW:
            out.append("overflow")
        elif self.family == MEM_DROP:
            out.append(drop_site(v))
            if v & VERDICT_DROP_RCVBUF:
                out.append("rcvbuf_full")
        return out


def drop_site(verdict: int) -> str:
    """mem_drop: where the kernel dropped the segment."""
    if verdict & VERDICT_DROP_PRUNE:
        return "ofo_pruned"
    if verdict & VERDICT_DROP_BACKLOG:
        return "backlog"
    both = VERDICT_DROP_RCVQ | VERDICT_DROP_OFO
    if verdict & both == both:
        return "rcvq_or_ofo"     # before 6.11: no socket to compare rcv_nxt with
    return "ofo" if verdict & VERDICT_DROP_OFO else "rcvq"


def _unpacking_init():
    # the same technique as collections.namedtuple: code generated once from
    # the layout's own names, never from data
    src = ("def __init__(self, values):\n    " +
           ", ".join("self." + n for n in _FLAT) + ", = values\n")
    scope: Dict = {}
    exec(src, scope)
    return scope["__init__"]


Event.__init__ = _unpacking_init()
