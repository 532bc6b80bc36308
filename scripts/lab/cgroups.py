"""Cgroups for the lab: workloads run inside a service, a container scope or a pod,
as they do on real hosts, so tests can check that events name them.

Every cgroup is made in the unified (v2) hierarchy, where the kernel takes a
task's and a socket's cgroup id from, and, on hybrid hosts, in the v1 memory
hierarchy too, where socket memory is charged (memory.kmem.tcp.*). The lab's
cgroups all sit under one root, `tcpoom-lab.slice`, and are removed on exit,
their tasks moved back first.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Dict, List, Optional

from tracer.host import cgroups as cg

LAB_ROOT = "tcpoom-lab.slice"
SHAPES = {
    # what a user would find on a host: systemd, Docker, Kubernetes (systemd driver)
    "service": "tcpoom-lab.slice/tcpoom-lab-{name}.service",
    "docker": "tcpoom-lab.slice/docker-{cid}.scope",
    "pod": "tcpoom-lab.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/"
           "cri-containerd-{cid}.scope",
}


class LabCgroup:
    """One cgroup in every hierarchy that matters here."""

    def __init__(self, mounts: cg.Mounts, rel: str):
        self.rel = "/" + rel.strip("/")
        self.dirs: List[str] = []
        for root in (mounts.v2, mounts.v1_memory):
            if root:
                self.dirs.append(os.path.join(root, rel))
        self.v2_root = mounts.v2
        self.v2_dir = os.path.join(mounts.v2, rel) if mounts.v2 else None
        self.memory_dir = os.path.join(mounts.memory_root, rel) if mounts.memory_root else None
        self.memory_v1 = mounts.memory_root == mounts.v1_memory and mounts.v1_memory is not None

    def make(self) -> "LabCgroup":
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
        if self.v2_dir and self.memory_dir == self.v2_dir:
            self._delegate_memory()
        return self

    def _delegate_memory(self) -> None:
        """Pure v2: a cgroup has memory.max only when its parent lists +memory in
        cgroup.subtree_control, level by level. The host (systemd, or the VM
        guest's set-up) enables it at the root; the lab enables it on its own
        levels, which hold no tasks (v2 refuses controllers in a cgroup with
        tasks in it, the root excepted)."""
        parts = self.rel.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = os.path.join(self.v2_root, *parts[:i])
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write("+memory")

    @property
    def v2_id(self) -> int:
        return os.stat(self.v2_dir).st_ino if self.v2_dir else 0

    @property
    def memory_id(self) -> int:
        return os.stat(self.memory_dir).st_ino if self.memory_dir else 0

    def limit_socket_memory(self, nbytes: int) -> str:
        """v1: memory.kmem.tcp.limit_in_bytes (which also turns socket accounting on
        for the cgroup: tcpmem_active); v2: memory.max. Returns the file written."""
        name = "memory.kmem.tcp.limit_in_bytes" if self.memory_v1 else "memory.max"
        with open(os.path.join(self.memory_dir, name), "w") as f:
            f.write(str(nbytes))
        return name

    def add(self, pid: int) -> None:
        for d in self.dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))


def _procs(d: str) -> List[int]:
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class LabCgroups:
    """`with LabCgroups() as cgs: cgs.make("service", name="reader")`; everything made
    is removed on exit (tasks still inside are moved to the hierarchy's root)."""

    def __init__(self) -> None:
        self.mounts = cg.read_mounts()
        if not self.mounts.v2 and not self.mounts.v1_memory:
            raise RuntimeError("no cgroup hierarchy mounted")
        self.made: List[LabCgroup] = []
        self._origin: Dict[str, str] = {}

    def make(self, shape: str, name: str = "x") -> LabCgroup:
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        uid = str(uuid.uuid4())
        rel = SHAPES[shape].format(name=name, cid=cid, uid_=uid.replace("-", "_"))
        c = LabCgroup(self.mounts, rel).make()
        c.container_id, c.pod_uid = (cid if shape != "service" else None), (uid if shape == "pod" else None)
        self.made.append(c)
        return c

    def join(self, c: LabCgroup) -> None:
        """Move this process in; exit moves it back where it was."""
        self._remember_origin()
        c.add(os.getpid())

    def _remember_origin(self) -> None:
        if self._origin:
            return
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                self._origin[ctrls] = path

    def leave(self) -> None:
        if not self._origin:
            return
        targets = []
        if self.mounts.v2:
            targets.append(os.path.join(self.mounts.v2, self._origin.get("", "/").lstrip("/")))
        if self.mounts.v1_memory:
            mem = next((p for k, p in self._origin.items() if "memory" in k.split(",")), "/")
            targets.append(os.path.join(self.mounts.v1_memory, mem.lstrip("/")))
        for t in targets:
            try:
                with open(os.path.join(t, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass
        self._origin = {}

    def __enter__(self) -> "LabCgroups":
        return self

    def __exit__(self, *exc) -> None:
        self.leave()
        roots = [r for r in (self.mounts.v2, self.mounts.v1_memory) if r]
        for root in roots:
            lab = os.path.join(root, LAB_ROOT)
            # deepest first; a task still inside goes back to the root
            for d, _, _ in sorted(os.walk(lab), key=lambda x: -x[0].count("/")):
                for pid in _procs(d):
                    try:
                        with open(os.path.join(root, "cgroup.procs"), "w") as f:
                            f.write(str(pid))
                    except OSError:
                        pass
                rmdir_patiently(d)


def rmdir_patiently(d: str, tries: int = 100) -> None:
    """Remove an empty cgroup directory, waiting (20 ms a try) while the kernel
    still holds it busy: a dying task, or a socket whose memory charge still
    references the css. Gone already is fine; still busy at the end is left."""
    for _ in range(tries):
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def leftover() -> Optional[str]:
    """A lab cgroup left behind, if any (tests check there is none)."""
    m = cg.read_mounts()
    for root in (m.v2, m.v1_memory):
        if root and os.path.exists(os.path.join(root, LAB_ROOT)):
            return os.path.join(root, LAB_ROOT)
    return None
