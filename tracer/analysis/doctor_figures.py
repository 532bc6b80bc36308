"""What the doctor works out from the figures /proc shows now
(tracer/model/host_figures.py): the TcpExt counters' deltas, the worst cases an
expert multiplies out, and the small vocabulary every doctor rule writes its
findings in. Pure: nothing here reads the host."""
from __future__ import annotations

from typing import Dict, Optional

from tracer.model.host_figures import Figures, Triple
from tracer.model.units import size

from .sizing import ORPHAN_COST

# TcpExt counters shown with their totals and deltas (all per network namespace).
COUNTERS = (
    "TCPAbortOnMemory",          # tcp_check_oom() killed an orphan: too many, or tcp_mem[2]
    "TCPTimeWaitOverflow",       # no TIME_WAIT bucket: the connection closed without one
    "TCPMemoryPressures",        # entries into memory pressure (tcp_mem[1] crossed)
    "TCPMemoryPressuresChrono",  # ms spent under pressure, added when pressure is left
    "PruneCalled",               # a receive queue over budget was collapsed
    "RcvPruned",                 # ... and collapsing did not free enough: segment dropped
    "OfoPruned",                 # out-of-order queue thrown away to make room
    "TCPRcvQDrop",               # in-order segment dropped: receive memory refused
    "TCPOFODrop",                # out-of-order segment dropped: receive memory refused
    "TCPAbortOnTimeout",         # a connection (often an orphan) gave up on its retries
)
# Dropped received data: the per-socket budget (rcvbuf) or tcp_mem refused the memory.
DROPS = ("RcvPruned", "OfoPruned", "TCPRcvQDrop", "TCPOFODrop")
# Counters whose history (total, not delta) is worth a line when they did not move now.
HISTORY = ("TCPAbortOnMemory", "TCPTimeWaitOverflow", "TCPMemoryPressures") + DROPS


def pct(value: float, limit: float) -> str:
    if not limit:
        return "limit 0"
    return f"{100.0 * value / limit:.0f}%"


def pages(n: int, page: int) -> str:
    return f"{n} pages ({size(n * page)})"


def kernel_default_tcp_mem(mem_total: int, page_size: int) -> Triple:
    """About what tcp_init_mem() sets at boot on a host with this much memory.

    The kernel uses nr_free_buffer_pages()/16, a little below MemTotal in pages (it
    leaves out the zones' high watermarks), so this is an estimate within ~1%.
    """
    limit = max((mem_total // page_size) // 16, 128)
    low = limit // 4 * 3
    return low, limit, low * 2


def counter_table(fig: Figures) -> Dict[str, dict]:
    """{counter: {"total": n or None, "delta": d or None}} for COUNTERS."""
    out = {}
    for name in COUNTERS:
        after = (fig.counters_after or {}).get(name)
        before = (fig.counters_before or {}).get(name)
        if after is None and fig.counters_after is None:
            after = before
        delta = after - before if after is not None and before is not None else None
        out[name] = {"total": after, "delta": delta}
    return out


def worst_cases(fig: Figures) -> dict:
    """The two worst cases an expert multiplies out; None where a figure is missing."""
    out = {"sockets": None, "buffer_bytes": None, "tcp_mem_high_bytes": None,
           "orphan_bytes": None, "mem_total_bytes": fig.mem_total}
    # alloc counts every TCP socket of the host (IPv4 and IPv6, orphans included): the
    # population tcp_mem, a host-wide limit, has to cover. inuse is only this namespace.
    sockets = fig.alloc
    if sockets is None and fig.inuse is not None:
        sockets = fig.inuse + (fig.inuse6 or 0)
    out["sockets"] = sockets
    if sockets is not None and fig.tcp_rmem and fig.tcp_wmem:
        out["buffer_bytes"] = sockets * (fig.tcp_rmem[2] + fig.tcp_wmem[2])
    if fig.tcp_mem:
        out["tcp_mem_high_bytes"] = fig.tcp_mem[2] * fig.page_size
    if fig.tcp_max_orphans is not None:
        out["orphan_bytes"] = fig.tcp_max_orphans * ORPHAN_COST
    return out


def finding(id_: str, severity: str, title: str, limit: Optional[str] = None,
             evidence=(), advice=(), why: str = "") -> dict:
    return {"id": id_, "severity": severity, "limit": limit, "title": title,
            "evidence": list(evidence), "advice": list(advice), "why": why}


SLOW_CONSUMERS = ("Look for slow consumers first: `ss -tmp` lists each socket's queues "
                   "(skmem r = receive, t = send); sockets whose queues stay large belong to "
                   "a reader that stopped or a peer that stopped acknowledging. They are the "
                   "usual root cause, and raising limits only delays them. `tcpoom trace` "
                   "shows every refusal with the sockets holding the most memory.")
