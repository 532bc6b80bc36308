"""Socket memory of the cgroups that matter, against their limits: those events
came from, and the top `top` by socket memory.

Which cgroups are the top is decided by a walk of the memory hierarchy at most
every `refresh_s` seconds, off the scrape (the daemon's tick): a host with
thousands of cgroups costs one walk, not one per scrape. Their figures are read
at scrape time, like every other gauge. v2: memory.stat `sock`, charged to
memory.current and refused at memory.max (memory.high throttles); v1:
memory.kmem.tcp.usage_in_bytes refused at memory.kmem.tcp.limit_in_bytes (and
only charged at all while that limit is set).
"""
from __future__ import annotations

import heapq
import os
import time
from typing import Dict, Iterable, List, Optional, Tuple

from tracer.host import cgroups as cg
from tracer.model.containers import V1_MEMORY, V2, decode


# v1 reports "no limit" as the page-rounded LONG_MAX
_V1_UNLIMITED = 1 << 62


def _int(path: str) -> Optional[int]:
    """A number file; None for "max", absent or unreadable. os.read, not open():
    a scrape reads a few hundred of these, and a text-mode open costs ~3x."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return int(text)
    except ValueError:
        return None


def figures(root: str, rel: str, version: str) -> Optional[cg.SockMemory]:
    """What the gauges show of one cgroup (cg.sock_memory, without the files
    serve does not export); None when the cgroup is gone."""
    d = os.path.join(root, rel.lstrip("/"))
    if version == V2:
        sock = _sock_v2(d)
        if sock is None:
            return None
        return cg.SockMemory(path=rel, version="v2", sock=sock, limit=_int(os.path.join(d, "memory.max")),
                             high=_int(os.path.join(d, "memory.high")),
                             usage=_int(os.path.join(d, "memory.current")), limit_name="memory.max")
    usage = _int(os.path.join(d, "memory.kmem.tcp.usage_in_bytes"))
    if usage is None:
        return None
    limit = _int(os.path.join(d, "memory.kmem.tcp.limit_in_bytes"))
    if limit is not None and limit >= _V1_UNLIMITED:
        limit = None
    return cg.SockMemory(path=rel, version="v1", sock=usage, limit=limit,
                         failcnt=_int(os.path.join(d, "memory.kmem.tcp.failcnt")),
                         limit_name="memory.kmem.tcp.limit_in_bytes")


def _sock_v2(d: str) -> Optional[int]:
    try:
        with open(os.path.join(d, "memory.stat"), "rb") as f:
            for line in f:
                if line.startswith(b"sock "):
                    return int(line[5:])
    except (OSError, ValueError):
        pass
    return None


def _sock_v1(d: str) -> Optional[int]:
    return _int(os.path.join(d, "memory.kmem.tcp.usage_in_bytes"))


class CgroupMemory:
    def __init__(self, top: int, mounts: Optional[cg.Mounts] = None, refresh_s: float = 30.0,
                 clock=time.monotonic):
        self.top = top
        self.mounts = mounts if mounts is not None else cg.read_mounts()
        self.root = self.mounts.memory_root
        self.version = V2 if self.root and self.root == self.mounts.v2 else "v1"
        self.refresh_s = refresh_s
        self._clock = clock
        self._walked_at: Optional[float] = None
        self.largest: List[str] = []             # paths, largest socket memory first
        self.walked = 0                          # cgroups the last walk visited
        self.walk_s = 0.0

    def refresh(self, force: bool = False) -> bool:
        """Walk the hierarchy for the top cgroups by socket memory, if due."""
        now = self._clock()
        if not self.root or (not force and self._walked_at is not None
                             and now - self._walked_at < self.refresh_s):
            return False
        self._walked_at = now
        read = _sock_v2 if self.version == V2 else _sock_v1
        found: List[Tuple[int, str]] = []
        stack, seen = [self.root], 0
        while stack and seen < cg.MAX_WALK:
            d = stack.pop()
            seen += 1
            if d != self.root:              # the root is the host: tcpoom_tcp_memory_bytes
                sock = read(d)
                if sock:
                    found.append((sock, d))
            try:
                with os.scandir(d) as it:
                    stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        top = heapq.nlargest(self.top, found)
        self.largest = ["/" + os.path.relpath(d, self.root) for _, d in top]
        self.walked = seen
        self.walk_s = self._clock() - now
        return True

    def read(self, event_paths: Iterable[str]) -> List[cg.SockMemory]:
        """Figures of the cgroups events came from and of the largest, now."""
        if not self.root:
            return []
        out, done = [], set()
        for rel in list(event_paths) + list(self.largest):
            if rel in done or rel == "/":
                continue
            done.add(rel)
            sm = figures(self.root, rel, self.version)
            if sm is not None:
                out.append(sm)
        return out

    def holds(self, kind: str) -> bool:
        """Whether a cgroup id of this kind is a directory of the memory
        hierarchy: a memcg id always (Cgroups resolves it there), a v2 id
        when the memory controller is on the unified tree."""
        return kind == V1_MEMORY or self.version == V2

    def gone(self, rel: str) -> bool:
        return bool(self.root) and not os.path.isdir(os.path.join(self.root, rel.lstrip("/")))


def container_label(path: str, pods: Optional[Dict[str, str]] = None) -> str:
    """The container, pod or unit a cgroup path names; "" when it names none."""
    label = decode(path, pods).label
    return "" if label == path else label
