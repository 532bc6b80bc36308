"""Who a cgroup is: a cgroup path decoded into the service or container a user
would type (systemd units and slices, Docker, containerd, CRI-O, Podman,
Kubernetes pods), and the table of cgroup ids a recording carries so a report on
another machine still names them. Pure: no file is read here (the host side,
tracer/host/cgroups.py, resolves ids on the traced host).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

V2 = "v2"
V1_MEMORY = "memory"
MAX_NAMES = 16384            # ids remembered per recording, at most

_HEX64 = re.compile(r"[0-9a-f]{64}")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
# runtime prefixes of a container's scope (systemd driver) or directory (cgroupfs)
_RUNTIMES = (("docker-", "docker"), ("cri-containerd-", "containerd"), ("crio-conmon-", "crio-conmon"),
             ("crio-", "crio"), ("libpod-conmon-", "podman-conmon"), ("libpod-", "podman"))
_RUNTIME_DIRS = {"docker": "docker", "containerd": "containerd", "crio": "crio", "libpod": "podman",
                 "system.slice": None}


@dataclass
class Identity:
    """What a cgroup path says about who runs there."""
    path: str
    unit: Optional[str] = None          # systemd unit (.service or .scope)
    slice: Optional[str] = None         # innermost systemd slice
    runtime: Optional[str] = None       # docker, containerd, crio, podman
    container: Optional[str] = None     # the full container id (64 hex)
    pod_uid: Optional[str] = None       # Kubernetes pod UID, with dashes
    pod: Optional[str] = None           # namespace/name, where the host shows it
    qos: Optional[str] = None           # Kubernetes QoS class: guaranteed, burstable, besteffort
    name: Optional[str] = None          # the container's name, where the node shows it

    @property
    def label(self) -> str:
        """The short name a report shows: pod/container, container, unit, or path."""
        if self.pod_uid:
            who = self.pod or f"pod {self.pod_uid}"
            return f"{who}/{self.name or self.container[:12]}" if self.container else who
        if self.container:
            return f"{self.runtime or 'container'}:{self.name or self.container[:12]}"
        if self.unit:
            return self.unit
        if self.slice:
            return self.slice
        return self.path

    def matches(self, query: str) -> bool:
        """--container ID: a container id prefix (12 hex is what docker ps shows), a
        container name, a pod UID, a pod namespace/name or name, or a unit name."""
        q = query.strip().lower()
        if not q:
            return False
        if self.container and self.container.startswith(q):
            return True
        if self.name and q == self.name.lower():
            return True
        if self.pod_uid and q in (self.pod_uid, self.pod_uid.replace("-", "_")):
            return True
        if self.pod and (q == self.pod.lower() or q == self.pod.split("/", 1)[-1].lower()):
            return True
        return bool(self.unit and q in (self.unit.lower(), self.unit.lower().rsplit(".", 1)[0]))

    def to_json(self) -> Dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: Dict) -> "Identity":
        """Back from to_json() (or a recording's cgroups block, which adds "label")."""
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


def decode(path: str, pods: Optional[Dict[str, str]] = None) -> Identity:
    """Decode a cgroup path (relative to its hierarchy's root). `pods` maps a pod
    UID to "namespace/name" (pod_names())."""
    ident = Identity(path=path)
    parts = [p for p in path.split("/") if p]
    for i, p in enumerate(parts):
        if p.endswith(".slice"):
            ident.slice = p
        elif p.endswith(".service") or p.endswith(".scope"):
            ident.unit = p
        m = _POD.search(p)
        if m and (i > 0 and "kubepods" in "/".join(parts[:i + 1]) or p.startswith("pod")):
            ident.pod_uid = m.group(1).replace("_", "-")
        if "kubepods" in p or (i and "kubepods" in parts[i - 1]):
            for q in ("burstable", "besteffort"):
                if q in p:
                    ident.qos = q
        stem = p[:-len(".scope")] if p.endswith(".scope") else p
        for prefix, runtime in _RUNTIMES:
            if stem.startswith(prefix) and _HEX64.fullmatch(stem[len(prefix):]):
                ident.runtime, ident.container = runtime, stem[len(prefix):]
                break
        else:
            if _HEX64.fullmatch(stem):
                # cgroupfs driver: /docker/<id>, /kubepods/burstable/pod<uid>/<id>, ...
                ident.container = stem
                parent = parts[i - 1] if i else ""
                ident.runtime = _RUNTIME_DIRS.get(parent, ident.runtime)
    if ident.pod_uid and ident.qos is None and any("kubepods" in p for p in parts):
        ident.qos = "guaranteed"
    if ident.pod_uid and pods:
        ident.pod = pods.get(ident.pod_uid)
    return ident



class Names:
    """cgroup ids -> identities, from the cgroups blocks of a recording (learn())
    or from the host (tracer.host.cgroups.Cgroups, which fills it as it resolves).
    Kinds: "v2" (socket/task cgroup v2 id) and "memory" (memory cgroup id)."""

    def __init__(self) -> None:
        self._known: Dict[Tuple[str, int], Dict] = {}
        self.changes = 0         # counts stores: whoever keeps answers of who() knows when to drop them

    def identity(self, kind: str, cgid: int) -> Optional[Dict]:
        return self._known.get((kind, cgid)) if cgid else None

    def _store(self, kind: str, cgid: int, ident: Dict) -> None:
        self._known[(kind, cgid)] = ident
        self.changes += 1
        if len(self._known) > MAX_NAMES:
            self._known.pop(next(iter(self._known)))

    def learn(self, block: Dict) -> None:
        """Take in a cgroups block read from a trace file."""
        for kind, ids in (block.get("ids") or {}).items():
            for k, v in ids.items():
                self._store(kind, int(k), v)

    def name(self, kind: str, cgid: int) -> str:
        ident = self.identity(kind, cgid)
        if ident is None:
            return f"cgroup:{cgid}" if cgid else "-"
        return ident.get("label") or ident["path"]

    def path(self, kind: str, cgid: int) -> Optional[str]:
        ident = self.identity(kind, cgid)
        return ident["path"] if ident else None

    def who(self, e) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        """(cgroup path, memory cgroup path, container/service label) of an event's
        owner: the owner's v2 cgroup, else the socket's; the label from the most
        specific of that and the memory cgroup (hybrid hosts often keep every
        task in the unified root and the real tree in v1)."""
        cg = self.path(V2, e.who_cgroup) if e.who_cgroup else None
        mem = self.path(V1_MEMORY, e.memcg) if getattr(e, "memcg", 0) else None
        best = cg if cg and cg != "/" else (mem if mem and mem != "/" else None)
        label = None
        if best:
            ident = self.identity(V2, e.who_cgroup) if best == cg else self.identity(V1_MEMORY, e.memcg)
            label = (ident or {}).get("label") or best
        return cg, mem, label


def matches_path(path: Optional[str], query: str) -> bool:
    """--cgroup PATH: the cgroup itself or any cgroup below it."""
    if path is None:
        return False
    q = "/" + query.strip().strip("/")
    return q == "/" or path == q or path.startswith(q + "/")
