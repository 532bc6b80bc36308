"""Cgroups: from the id a BPF program reads to the path, the service or container a
user would type, and the cgroup's socket memory against its limits.

The id. A BPF program sees two cgroup identities, and both are inode numbers of a
cgroup directory:
- the socket's (and the task's) cgroup v2 id, `sk_cgrp_data` and
  `bpf_get_current_cgroup_id()`: the kernfs id of the cgroup in the *unified*
  hierarchy, which exists on hybrid hosts too (systemd mirrors its tree there, or it
  is empty and every id is the root's);
- the socket's memory cgroup (`sk->sk_memcg->css.cgroup->kn->id`): on a v1 host the
  inode of the directory in the v1 memory hierarchy, on a v2 host the same as above.
From 5.5 kernfs ids are 64-bit (inode | generation << 32 on 32-bit ino_t hosts);
stat() gives the low 32 bits' inode, which is what 64-bit hosts use whole.

Resolution walks the hierarchy once and again on a miss (at most every
RESCAN_EVERY_S), keeps at most MAX_ENTRIES paths, and never raises: an id it
cannot place reads as None, and the caller shows the number.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

MAX_ENTRIES = 8192           # paths kept per hierarchy; a host has rarely more cgroups
RESCAN_EVERY_S = 2.0         # a miss rescans the tree at most this often
MAX_WALK = 50000             # directories one walk visits, at most (a runaway tree)

from tracer.host.container_names import ContainerNames
from tracer.model.containers import V1_MEMORY, V2, Identity, Names, decode, matches_path  # noqa: F401


# ---------------------------------------------------------------- mounts

@dataclass
class Mounts:
    """Where the hierarchies are: the unified (v2) one and v1's memory controller."""
    v2: Optional[str] = None
    v1_memory: Optional[str] = None
    v2_controllers: List[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        """"v2" (unified only), "hybrid" (v1 controllers beside a unified tree),
        "v1" (no unified tree) or "none"."""
        if self.v2 and not self.v1_memory:
            return "v2"
        if self.v2 and self.v1_memory:
            return "hybrid"
        return "v1" if self.v1_memory else "none"

    @property
    def memory_root(self) -> Optional[str]:
        """The hierarchy whose files hold socket memory: v2 when its memory
        controller is on, else v1's memory controller."""
        if self.v2 and "memory" in self.v2_controllers:
            return self.v2
        return self.v1_memory or None


def read_mounts(mountinfo: str = "/proc/self/mountinfo") -> Mounts:
    m = Mounts()
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return m
    for line in lines:
        # id parent major:minor root mountpoint opts [optional...] - fstype source superopts
        left, _, right = line.partition(" - ")
        parts, rparts = left.split(), right.split()
        if len(parts) < 5 or len(rparts) < 3:
            continue
        point = parts[4].replace("\\040", " ")
        if rparts[0] == "cgroup2" and m.v2 is None:
            m.v2 = point
        elif rparts[0] == "cgroup" and "memory" in rparts[2].split(",") and m.v1_memory is None:
            m.v1_memory = point
    if m.v2:
        m.v2_controllers = _read(os.path.join(m.v2, "cgroup.controllers")).split()
    return m


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


# ---------------------------------------------------------------- id -> path

class Resolver:
    """cgroup id -> path relative to its hierarchy's root ("/" for the root),
    for one hierarchy. Cached and bounded; misses rescan, rate-limited."""

    def __init__(self, root: Optional[str], clock=time.monotonic):
        self.root = root
        self._paths: "OrderedDict[int, str]" = OrderedDict()
        self._clock = clock
        self._scanned_at: Optional[float] = None

    def path(self, cgid: int) -> Optional[str]:
        if not self.root or not cgid:
            return None
        hit = self._paths.get(cgid)
        if hit is not None:
            self._paths.move_to_end(cgid)
            return hit
        now = self._clock()
        if self._scanned_at is not None and now - self._scanned_at < RESCAN_EVERY_S:
            return None
        self._scanned_at = now
        self._scan(want=cgid)
        return self._paths.get(cgid)

    def _remember(self, cgid: int, rel: str) -> None:
        self._paths[cgid] = rel
        self._paths.move_to_end(cgid)
        while len(self._paths) > MAX_ENTRIES:
            self._paths.popitem(last=False)

    def _scan(self, want: int) -> None:
        found = None
        stack, seen = [self.root], 0
        while stack and seen < MAX_WALK:
            d = stack.pop()
            seen += 1
            try:
                ino = os.stat(d).st_ino
            except OSError:
                continue                      # removed while we walked
            rel = "/" + os.path.relpath(d, self.root) if d != self.root else "/"
            if ino == want:
                found = rel
            else:
                self._remember(ino, rel)
            try:
                with os.scandir(d) as it:
                    stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        if found is not None:
            self._remember(want, found)       # last, so the bound never drops it


def pod_names(log_dir: str = "/var/log/pods") -> Dict[str, str]:
    """Pod UID -> "namespace/name", from the kubelet's log directories
    (<namespace>_<name>_<uid>), the one place every node shows them without an
    API call. Empty where there is no kubelet."""
    out: Dict[str, str] = {}
    try:
        names = os.listdir(log_dir)
    except OSError:
        return out
    for n in names:
        bits = n.split("_")
        if len(bits) >= 3:
            out[bits[-1]] = f"{bits[0]}/{'_'.join(bits[1:-1])}"
    return out


# ---------------------------------------------------------------- socket memory

@dataclass
class SockMemory:
    """A memory cgroup's socket memory against its limits (bytes; None = no limit
    or not readable)."""
    path: str
    version: str                        # "v2" or "v1"
    sock: Optional[int] = None          # v2 memory.stat sock; v1 memory.kmem.tcp.usage_in_bytes
    limit: Optional[int] = None         # v2 memory.max; v1 memory.kmem.tcp.limit_in_bytes
    high: Optional[int] = None          # v2 memory.high
    usage: Optional[int] = None         # v2 memory.current (all memory: sockets are part of it)
    peak: Optional[int] = None          # v1 memory.kmem.tcp.max_usage_in_bytes; v2 memory.peak
    failcnt: Optional[int] = None       # v1 memory.kmem.tcp.failcnt: refused charges
    limit_name: str = ""                # the file a user changes
    # v2 memory.events (this cgroup and below): `max` counts charges that met
    # memory.max (every reclaim round of one, and charges forced past it: a
    # receive in softirq, 6.1+), `oom` the cgroup's OOM killer runs (a refused
    # send of up to 8 pages runs it once; -1000 tasks leave it without a victim)
    max_events: Optional[int] = None
    oom_events: Optional[int] = None
    oom_kills: Optional[int] = None

    @property
    def percent(self) -> Optional[float]:
        """Of the limit that refuses socket charges: v1 the tcp limit on the
        socket figure, v2 memory.max on all the cgroup's memory."""
        if not self.limit:
            return None
        used = self.sock if self.version == "v1" else self.usage
        return None if used is None else 100.0 * used / self.limit

    def to_json(self) -> Dict:
        return asdict(self)


# v1 reports "no limit" as the page-rounded LONG_MAX
_V1_UNLIMITED = 1 << 62


def _num(text: str) -> Optional[int]:
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def sock_memory(root: str, rel: str, version: str) -> Optional[SockMemory]:
    """Socket memory of the cgroup at `rel` under `root`, or None when the cgroup
    is gone or the hierarchy has no memory controller."""
    d = os.path.join(root, rel.lstrip("/"))
    if version == V2:
        stat = _read(os.path.join(d, "memory.stat"))
        if not stat:
            return None
        sock = None
        for line in stat.splitlines():
            k, _, v = line.partition(" ")
            if k == "sock":
                sock = _num(v)
                break
        events = {}
        for line in _read(os.path.join(d, "memory.events")).splitlines():
            k, _, v = line.partition(" ")
            events[k] = _num(v)
        return SockMemory(path=rel, version="v2", sock=sock,
                          limit=_num(_read(os.path.join(d, "memory.max"))),
                          high=_num(_read(os.path.join(d, "memory.high"))),
                          usage=_num(_read(os.path.join(d, "memory.current"))),
                          peak=_num(_read(os.path.join(d, "memory.peak"))),
                          limit_name="memory.max", max_events=events.get("max"),
                          oom_events=events.get("oom"), oom_kills=events.get("oom_kill"))
    usage = _num(_read(os.path.join(d, "memory.kmem.tcp.usage_in_bytes")))
    if usage is None:
        return None
    limit = _num(_read(os.path.join(d, "memory.kmem.tcp.limit_in_bytes")))
    if limit is not None and limit >= _V1_UNLIMITED:
        limit = None
    return SockMemory(path=rel, version="v1", sock=usage, limit=limit,
                      peak=_num(_read(os.path.join(d, "memory.kmem.tcp.max_usage_in_bytes"))),
                      failcnt=_num(_read(os.path.join(d, "memory.kmem.tcp.failcnt"))),
                      limit_name="memory.kmem.tcp.limit_in_bytes")


def sock_memory_all(mounts: Optional[Mounts] = None, top: int = 20,
                    only_limited: bool = False) -> List[SockMemory]:
    """Every memory cgroup with socket memory, the largest first (doctor, live,
    holders). v1: those with a tcp limit are the ones whose sockets are charged
    at all (tcpmem_active), so `only_limited` keeps just those."""
    mounts = mounts or read_mounts()
    root = mounts.memory_root
    if not root:
        return []
    version = V2 if root == mounts.v2 else "v1"
    out: List[SockMemory] = []
    stack, seen = [root], 0
    while stack and seen < MAX_WALK:
        d = stack.pop()
        seen += 1
        rel = "/" + os.path.relpath(d, root) if d != root else "/"
        sm = sock_memory(root, rel, version)
        if sm is not None and (sm.sock or sm.limit or sm.failcnt) and not (only_limited and sm.limit is None):
            out.append(sm)
        try:
            with os.scandir(d) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    out.sort(key=lambda s: (-(s.sock or 0), s.path))
    return out[:top]


# ---------------------------------------------------------------- one place for all of it

class Cgroups(Names):
    """Names, resolved on the traced host as ids come: `name(kind, id)` for display,
    `drain()` for the trace file's cgroups block (what a report on another machine
    reads back with Names.learn())."""

    def __init__(self, mounts: Optional[Mounts] = None, pods: Optional[Dict[str, str]] = None,
                 names: Optional[ContainerNames] = None):
        super().__init__()
        self.mounts = mounts if mounts is not None else read_mounts()
        self._container_names = names if names is not None else ContainerNames()
        self._resolvers = {V2: Resolver(self.mounts.v2),
                           V1_MEMORY: Resolver(self.mounts.memory_root)}
        self._pods = pods
        self._unrecorded: Dict[str, Dict[str, Dict]] = {}

    def _pod_names(self) -> Dict[str, str]:
        if self._pods is None:
            self._pods = pod_names()
        return self._pods

    def identity(self, kind: str, cgid: int) -> Optional[Dict]:
        if not cgid:
            return None
        known = super().identity(kind, cgid)
        if known is not None:
            return known
        res = self._resolvers.get(kind)
        path = res.path(cgid) if res else None
        if path is None:
            return None               # not remembered: a later rescan may find it
        found = decode(path, self._pod_names() if "pod" in path else None)
        found.name = self._container_names.name(found.runtime, found.container, in_pod=bool(found.pod_uid))
        ident = found.to_json()
        ident["label"] = found.label
        self._store(kind, cgid, ident)
        self._unrecorded.setdefault(kind, {})[str(cgid)] = ident
        return ident

    def drain(self) -> Optional[Dict]:
        """Identities resolved since the last call, for a cgroups block; None if none."""
        if not self._unrecorded:
            return None
        out, self._unrecorded = self._unrecorded, {}
        return {"mode": self.mounts.mode, "ids": out}


def ids_for(query_path: str, mounts: Optional[Mounts] = None) -> Dict[str, List[int]]:
    """The cgroup ids under a path, per kind: what a --cgroup filter can hand to the
    kernel side (ids of cgroups made later are matched in user space)."""
    mounts = mounts or read_mounts()
    out: Dict[str, List[int]] = {}
    for kind, root in ((V2, mounts.v2), (V1_MEMORY, mounts.memory_root)):
        if not root:
            continue
        d = os.path.join(root, query_path.strip("/"))
        ids: List[int] = []
        for base, dirs, _ in os.walk(d):
            try:
                ids.append(os.stat(base).st_ino)
            except OSError:
                pass
        if ids:
            out[kind] = ids
    return out


def human(n: Optional[int]) -> str:
    if n is None:
        return "max"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)



def of_pid(pid: int, proc_root: str = "/proc") -> Tuple[Optional[str], Optional[str]]:
    """(cgroup v2 path, memory cgroup path) of a process, from /proc/PID/cgroup."""
    v2 = mem = None
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if ctrls == "":
                    v2 = path
                elif "memory" in ctrls.split(","):
                    mem = path
    except (OSError, ValueError):
        pass
    return v2, mem or v2


def label_of(v2: Optional[str], mem: Optional[str]) -> Optional[str]:
    """The container or service of a process, from the more specific of its paths."""
    best = v2 if v2 and v2 != "/" else (mem if mem and mem != "/" else None)
    return decode(best).label if best else None
