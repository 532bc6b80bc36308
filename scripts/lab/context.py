"""What a scenario gets to work with: the lab's namespace, a sysctl guard, counters."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from tracer.host import netns, procfs

from .sysctls import SysctlGuard

# The kernel counters every scenario reports (TcpExt, per network namespace). The first
# seven are the ones the scenarios aim at; the next three explain where the rest went; the
# last three count the aborts that look like TIME_WAIT overflows at a tracepoint.
COUNTERS = (
    "TCPAbortOnMemory",          # an orphan killed by tcp_check_oom (close path or timer)
    "TCPTimeWaitOverflow",       # no TIME_WAIT bucket: tcp_max_tw_buckets reached
    "TCPMemoryPressures",        # TCP entered memory pressure (tcp_mem[1] crossed)
    "TCPMemoryPressuresChrono",  # ms spent under pressure, added when it is left
    "TCPRcvQDrop",               # an in-order segment dropped: receive memory refused
    "PruneCalled",               # receive queue collapsed to make memory
    "TCPOFODrop",                # an out-of-order segment dropped: memory refused
    "RcvPruned",                 # ... and collapsing did not free enough
    "TCPAbortOnTimeout",         # an orphan killed by its retry limit instead
    "TCPTimeouts",               # retransmission timer runs (which RTO did the killing)
    "TCPAbortOnData",            # SO_LINGER {1,0} closes, data after close, TCP_LINGER2 -1
    "TCPAbortOnClose",           # closed with unread data: reset at close
    "TCPAbortFailed",            # a reset whose skb could not be allocated
    "TCPBacklogDrop",            # a segment dropped at a full socket backlog (SOCKET_BACKLOG)
    "OfoPruned",                 # out-of-order queue pruned (once per call, not per skb)
)

# No step of a scenario may take longer than this (the whole lab stays under ~15 s).
WORKLOAD_TIMEOUT_S = 12.0

# (minimum, maximum or None) per counter: what a scenario promises.
Expected = Dict[str, Tuple[int, Optional[int]]]


class LabError(Exception):
    """The lab refused or failed to run a scenario."""


@dataclass
class Context:
    netns: str
    sysctls: SysctlGuard
    allow_global_sysctls: bool
    details: Dict[str, Any] = field(default_factory=dict)

    def inside(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn on a thread inside the lab's namespace (sockets it creates stay there)."""
        return netns.run_in_netns(self.netns, fn, *args, timeout=WORKLOAD_TIMEOUT_S)

    def ip(self, *args: str) -> None:
        proc = subprocess.run(["ip", "-n", self.netns, *args], capture_output=True, text=True,
                              timeout=netns.IP_TIMEOUT_S)
        if proc.returncode != 0:
            raise LabError(f"`ip {' '.join(args)}` failed in {self.netns}: {proc.stderr.strip()}")

    def counters(self) -> Dict[str, int]:
        tcp_ext = procfs.read_netstat(self.netns).get("TcpExt", {})
        return {name: tcp_ext.get(name, 0) for name in COUNTERS}

    def sockstat_tcp(self) -> Dict[str, int]:
        return procfs.read_sockstat(self.netns).get("TCP", {})

    def set_sysctl(self, name: str, value) -> None:
        """A sysctl of the lab's namespace (restored after the run, dies with it anyway)."""
        self.sysctls.set(name, value, self.netns)

    def set_global_sysctl(self, name: str, value, at_most_s: Optional[float] = None) -> None:
        if not self.allow_global_sysctls:
            # Scenarios are checked before they start; this is the last line of defence.
            raise LabError(f"refusing to change host-wide {name} without allow_global_sysctls")
        if at_most_s is None:
            self.sysctls.set(name, value)
        else:
            self.sysctls.set_for_at_most(name, value, at_most_s)
