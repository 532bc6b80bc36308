"""How far each TCP socket-memory limit is, read from /proc when asked.

Host-wide (kernel 4.11+): sockstat TCP `mem` (pages), `orphan`, tcp_mem and
tcp_max_orphans. Per network namespace: sockstat `tw`, tcp_max_tw_buckets and
every TcpExt counter. Nothing is cached: a scrape sees the kernel as it is.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

from tracer.host import netns as _netns
from tracer.host import procfs

#: TcpExt counters exported beside the in-kernel counts (per netns)
TCPEXT_COUNTERS = ("TCPAbortOnMemory", "TCPTimeWaitOverflow", "TCPMemoryPressures",
                   "TCPMemoryPressuresChrono", "PruneCalled", "RcvPruned", "OfoPruned",
                   "TCPRcvQDrop", "TCPOFODrop")
#: tcp_check_oom(sk, shift) kills when orphans << shift > tcp_max_orphans: the
#: close path calls it with shift 0, tcp_out_of_resources (the timer path) with
#: 1 or 2 (idle for 2*RTO_MAX or no reset allowed, plus sk_err_soft)
SHIFTS = (0, 1, 2)


@dataclasses.dataclass
class NetnsFigures:
    inode: int
    tw: Optional[int]
    max_tw_buckets: Optional[int]
    tcpext: Dict[str, int]


@dataclasses.dataclass
class HostFigures:
    page_size: int
    memory_pages: Optional[int]
    tcp_mem_pages: Tuple[int, int, int]
    orphans: Optional[int]
    max_orphans: int
    sockets_allocated: Optional[int]
    pressure: Optional[bool]

    @property
    def memory_bytes(self) -> Optional[int]:
        return None if self.memory_pages is None else self.memory_pages * self.page_size

    def tcp_mem_bytes(self) -> Dict[str, int]:
        low, pressure, high = self.tcp_mem_pages
        return {"min": low * self.page_size, "pressure": pressure * self.page_size,
                "max": high * self.page_size}

    def orphan_limits(self) -> Dict[int, int]:
        """The orphan count at which tcp_check_oom starts killing, per shift."""
        return {s: self.max_orphans >> s for s in SHIFTS}


def read_host() -> HostFigures:
    tcp = procfs.read_sockstat().get("TCP", {})
    return HostFigures(
        page_size=os.sysconf("SC_PAGE_SIZE"),
        memory_pages=tcp.get("mem"),
        tcp_mem_pages=procfs.triple(procfs.read_host_sysctl("net.ipv4.tcp_mem")),
        orphans=tcp.get("orphan"),
        max_orphans=int(procfs.read_host_sysctl("net.ipv4.tcp_max_orphans")),
        sockets_allocated=tcp.get("alloc"),
        pressure=procfs.tcp_memory_pressure(),
    )


def _inside() -> Tuple[Optional[int], Optional[int], Dict[str, int]]:
    tw = procfs.read_sockstat().get("TCP", {}).get("tw")
    try:
        limit = int(procfs.read_sysctl("net.ipv4.tcp_max_tw_buckets"))
    except (OSError, ValueError):
        limit = None
    ext = procfs.read_netstat().get("TcpExt", {})
    return tw, limit, {k: ext[k] for k in TCPEXT_COUNTERS if k in ext}


def read_many(items: List[Tuple[int, Optional[str]]], timeout: float = 5.0
              ) -> Dict[int, Optional[NetnsFigures]]:
    """The figures of many namespaces on one helper thread that enters each in
    turn: a thread per namespace costs about 1 ms, a setns() a few us. None
    for a namespace that could not be entered (gone since it was listed)."""
    import threading
    out: Dict[int, Optional[NetnsFigures]] = {}
    if all(path is None for _, path in items):
        # serve's own namespace alone (the usual case): no thread to start
        for inode, _ in items:
            try:
                tw, limit, ext = _inside()
                out[inode] = NetnsFigures(inode, tw, limit, ext)
            except (OSError, ValueError):
                out[inode] = None
        return out

    def hop() -> None:
        # our own namespace first, read before the thread moves: without
        # CAP_SYS_ADMIN (/proc-only mode) even a setns() into it is refused
        for inode, path in sorted(items, key=lambda item: item[1] is not None):
            try:
                if path is not None:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        _netns._setns(fd, _netns.CLONE_NEWNET)
                    finally:
                        os.close(fd)
                tw, limit, ext = _inside()
                out[inode] = NetnsFigures(inode, tw, limit, ext)
            except (OSError, ValueError):
                out[inode] = None

    worker = threading.Thread(target=hop, name="netns-figures", daemon=True)
    worker.start()
    worker.join(timeout)
    return dict(out)


class NetnsDirectory:
    """Paths to the namespaces worth reading, by inode: ours, the filtered one,
    the named ones (/run/netns) and those events came from. Resolving an inode
    without a name scans /proc/*/ns/net, so a miss is retried at most every
    `retry_s` seconds."""

    def __init__(self, limit: int, retry_s: float = 30.0):
        self.limit = limit
        self.retry_s = retry_s
        self.own = _netns.netns_inode()
        self._paths: Dict[int, Optional[str]] = {self.own: None}
        self._missed: Dict[int, float] = {}

    def add(self, inode: int, path: Optional[str] = None) -> None:
        if inode in self._paths or len(self._paths) >= self.limit:
            return
        if path is not None:
            self._paths[inode] = path

    def named(self) -> None:
        if not os.path.isdir(_netns.NETNS_RUN_DIR):
            return
        for name in sorted(os.listdir(_netns.NETNS_RUN_DIR)):
            path = os.path.join(_netns.NETNS_RUN_DIR, name)
            try:
                self.add(os.stat(path).st_ino, path)
            except OSError:
                continue

    def resolve(self, inodes: List[int], now: float) -> None:
        for inode in inodes:
            if inode in self._paths or not inode or len(self._paths) >= self.limit:
                continue
            if now - self._missed.get(inode, -1e9) < self.retry_s:
                continue
            try:
                self._paths[inode] = _netns.resolve(inode)
            except _netns.NetnsError:
                self._missed[inode] = now

    def items(self) -> List[Tuple[int, Optional[str]]]:
        return sorted(self._paths.items())

    def forget(self, inode: int) -> None:
        if inode != self.own:
            self._paths.pop(inode, None)
