"""Container names: the name an operator types (`docker ps`, `kubectl get pods`)
for the container id a cgroup path carries, read from what the runtimes leave on
the node, without an API call or a socket to the daemon:

- Kubernetes, any runtime: the kubelet's /var/log/containers/
  <pod>_<namespace>_<container>-<id>.log links (pod, namespace and container
  names are DNS labels: no "_" inside them);
- Docker: /var/lib/docker/containers/<id>/config.v2.json, its "Name" ("/web");
- Podman (root): /var/lib/containers/storage/overlay-containers/containers.json,
  a list of {"id", "names"}.

A name not found is None and the report shows the short id, as before. Reads are
cached per id, and a directory listing is redone at most every RESCAN_EVERY_S.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Callable, Dict, Optional

RESCAN_EVERY_S = 2.0
MAX_CACHED = 8192
_K8S_LOG = re.compile(r"^([^_]+)_([^_]+)_(.+)-([0-9a-f]{64})\.log$")


class ContainerNames:
    def __init__(self, root: str = "/", clock: Callable[[], float] = time.monotonic):
        self.root = root
        self._clock = clock
        self._known: Dict[tuple, Optional[str]] = {}
        self._k8s: Dict[str, str] = {}
        self._k8s_scanned = None
        self._podman: Optional[Dict[str, str]] = None

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def name(self, runtime: Optional[str], cid: Optional[str], in_pod: bool = False) -> Optional[str]:
        """The container's name, or None."""
        if not cid:
            return None
        key = (runtime, in_pod, cid)
        if key in self._known:
            return self._known[key]
        if in_pod:
            found = self._kubernetes(cid)
        elif runtime == "docker":
            found = self._docker(cid)
        elif runtime == "podman":
            found = self._podman_name(cid)
        else:
            found = None
        if found is None and in_pod:
            return None            # the kubelet may link its log later: not cached
        if len(self._known) >= MAX_CACHED:
            self._known.pop(next(iter(self._known)))
        self._known[key] = found
        return found

    def _kubernetes(self, cid: str) -> Optional[str]:
        if cid not in self._k8s:
            now = self._clock()
            if self._k8s_scanned is None or now - self._k8s_scanned >= RESCAN_EVERY_S:
                self._k8s_scanned = now
                self._k8s = {}
                try:
                    entries = os.listdir(self._path("var/log/containers"))
                except OSError:
                    entries = []
                for entry in entries:
                    m = _K8S_LOG.match(entry)
                    if m:
                        self._k8s[m.group(4)] = m.group(3)
        return self._k8s.get(cid)

    def _docker(self, cid: str) -> Optional[str]:
        try:
            with open(self._path("var/lib/docker/containers", cid, "config.v2.json"), "rb") as f:
                name = json.load(f).get("Name")
        except (OSError, ValueError, AttributeError):
            return None
        return name.lstrip("/") or None if isinstance(name, str) else None

    def _podman_name(self, cid: str) -> Optional[str]:
        if self._podman is None or cid not in self._podman:
            self._podman = {}
            try:
                with open(self._path("var/lib/containers/storage/overlay-containers/containers.json"),
                          "rb") as f:
                    rows = json.load(f)
            except (OSError, ValueError):
                rows = []
            for row in rows if isinstance(rows, list) else []:
                names = row.get("names") if isinstance(row, dict) else None
                if isinstance(row, dict) and isinstance(row.get("id"), str) and names:
                    self._podman[row["id"]] = str(names[0])
        return self._podman.get(cid)
