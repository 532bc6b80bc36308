"""The five event families as every part of the tool names them: their order
on screen and in reports, the TcpExt counter each one moves, and the
in-kernel counter slot that counts it."""
from __future__ import annotations

from . import events as ev

FAMILY_ORDER = ("oom_check", "tw_overflow", "mem_exceed", "pressure", "mem_drop")

#: the TcpExt counter that moves once per event of each family (per netns)
KERNEL_COUNTER = {
    "oom_check": "TCPAbortOnMemory",
    "tw_overflow": "TCPTimeWaitOverflow",
    "mem_exceed": None,          # the kernel does not count refusals at tcp_mem[2]
    "pressure": "TCPMemoryPressures",
    # PROTO_MEM drops in tcp_data_queue and tcp_data_queue_ofo, SOCKET_BACKLOG
    # drops in tcp_add_backlog: one increment each (5.19-6.18); pruned
    # out-of-order skbs are outside the family's count (OfoPruned counts calls)
    "mem_drop": "TCPRcvQDrop+TCPOFODrop+TCPBacklogDrop",
}

FAMILY_SLOT = {"oom_check": ev.CNT_OOM_CHECK, "tw_overflow": ev.CNT_TW_OVERFLOW,
               "mem_exceed": ev.CNT_MEM_EXCEED, "pressure": ev.CNT_PRESSURE_ENTER,
               "mem_drop": ev.CNT_MEM_DROP}


def counter_parts(counter: str) -> tuple:
    """The TcpExt counters a family's counter name sums ("A+B" for mem_drop)."""
    return tuple(counter.split("+"))


#: every TcpExt counter a family is compared with
KERNEL_COUNTER_PARTS = tuple(p for c in KERNEL_COUNTER.values() if c for p in counter_parts(c))


def summed_delta(counter: str, delta) -> "int | None":
    """delta(name) summed over the counter's parts; None when one is unknown."""
    total = 0
    for part in counter_parts(counter):
        d = delta(part)
        if d is None:
            return None
        total += d
    return total
