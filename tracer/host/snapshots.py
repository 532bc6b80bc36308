"""Periodic snapshots of the /proc figures around the events (recordings)."""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

from . import netns as _netns
from . import procfs

#: while TCP is under memory pressure, the sockets holding the most memory are
#: listed this often (record, live --record)
HOLDERS_EVERY_S = 5.0


def take(netns: Optional[int] = None) -> dict:
    """sockstat, sockstat6, TcpExt, the limits and the pressure flag, as seen
    from `netns` (None: ours). inuse, tw and the TcpExt counters are per
    namespace; orphan, alloc, mem, tcp_mem and tcp_max_orphans are host-wide."""
    def read() -> dict:
        out = {
            "sockstat": procfs.read_sockstat(),
            "tcpext": procfs.read_netstat().get("TcpExt", {}),
            "pressure": procfs.tcp_memory_pressure(),
        }
        try:
            out["sockstat6"] = procfs.read_sockstat6()
        except OSError:
            out["sockstat6"] = {}
        return out
    snap = read() if not netns else _netns.run_in_netns(netns, read)
    limits = procfs.tcp_limits(netns or None)
    snap["limits"] = dataclasses.asdict(limits)
    snap["ts_ns"] = time.monotonic_ns()
    return snap


def take_light(netns: Optional[int] = None) -> dict:
    """Just the host-wide sockstat figures and the limits, for events whose
    orphan count the kernel side could not read."""
    limits = procfs.tcp_limits(netns or None)
    return {"ts_ns": time.monotonic_ns(), "light": True,
            "sockstat": {"TCP": procfs.read_sockstat().get("TCP", {})},
            "limits": dataclasses.asdict(limits)}
