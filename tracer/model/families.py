"""The four event families as every part of the tool names them: their order
on screen and in reports, the TcpExt counter each one moves, and the
in-kernel counter slot that counts it."""
from __future__ import annotations

from . import events as ev

FAMILY_ORDER = ("oom_check", "tw_overflow", "mem_exceed", "pressure")

#: the TcpExt counter that moves once per event of each family (per netns)
KERNEL_COUNTER = {
    "oom_check": "TCPAbortOnMemory",
    "tw_overflow": "TCPTimeWaitOverflow",
    "mem_exceed": None,          # the kernel does not count refusals at tcp_mem[2]
    "pressure": "TCPMemoryPressures",
}

FAMILY_SLOT = {"oom_check": ev.CNT_OOM_CHECK, "tw_overflow": ev.CNT_TW_OVERFLOW,
               "mem_exceed": ev.CNT_MEM_EXCEED, "pressure": ev.CNT_PRESSURE_ENTER}
