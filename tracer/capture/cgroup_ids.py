"""The cgroup ids a capture meets, resolved to names on the traced host and written
into the recording as cgroups blocks, so a report on another machine names the
services and containers (docs/trace-format.md, "cgroups").

The ids are read from a batch of raw records as three strided columns (a few
microseconds a batch, whatever the storm); only ids not met before are
resolved, through tracer.host.cgroups (a directory walk on a miss, rate-limited).
"""
from __future__ import annotations

from typing import Dict, Optional, Set, Tuple

from tracer.host import cgroups as cg
from tracer.model import events as ev
from tracer.model.containers import V1_MEMORY, V2

_OFF = ev.layout_offsets()
_FIELDS = ((V2, _OFF["owner_cgroup"]), (V2, _OFF["sk_cgroup"]), (V2, _OFF["cgroup"]),
           (V1_MEMORY, _OFF["memcg"]))
MAX_SEEN = 65536


class CgroupIds:
    def __init__(self, names: Optional[cg.Cgroups] = None):
        self.names = names if names is not None else cg.Cgroups()
        self._seen: Set[Tuple[str, int]] = set()
        self._pending: Set[Tuple[str, int]] = set()

    def note(self, payload, n: int, stride: int = ev.STRIDE, skip: int = ev.FRAME) -> None:
        """Take the ids of `n` framed records."""
        if not n:
            return
        buf = bytes(payload[:n * stride]).ljust(n * stride, b"\0")
        words = memoryview(buf).cast("Q")
        step = stride // 8
        done = []
        for kind, off in _FIELDS:
            column = words[(skip + off) // 8::step]
            # the socket's, the owner's and the context's cgroup are mostly
            # the same column: compared as bytes (a few ns a record), it is
            # taken once (a set of ints costs ~30 ns a record)
            raw = column.tobytes()
            if (kind, raw) in done:
                continue
            done.append((kind, raw))
            for cgid in set(column.tolist()):
                if cgid and (kind, cgid) not in self._seen:
                    self._pending.add((kind, cgid))

    def block(self) -> Optional[Dict]:
        """Resolve what is pending; a cgroups block of the new names, or None."""
        for kind, cgid in list(self._pending):
            if self.names.identity(kind, cgid) is not None:
                self._pending.discard((kind, cgid))
                self._seen.add((kind, cgid))
        if len(self._seen) > MAX_SEEN:
            self._seen.clear()
        return self.names.drain()
