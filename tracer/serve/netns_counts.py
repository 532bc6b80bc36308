"""Events counted per network namespace and family, as they arrive from the ring.

The in-kernel per-CPU counters are exact but not split by namespace; these
counts are, but they come from the ring buffer, which can drop records under a
storm (the kernel then counts them as lost, exported beside these). Labels are
bounded: the first `limit` namespaces seen get their own series, later ones
go to netns="other".
"""
from __future__ import annotations

import collections
import struct
import threading
from typing import Dict, List, Tuple

from tracer.model import events as ev

OTHER = "other"
_OFF = ev.layout_offsets()
_CODES = dict(ev.LAYOUT)


def picker(names: Tuple[str, ...]) -> struct.Struct:
    """A struct that reads just `names` (in this order) from one stride of a
    framed batch, skipping the rest: a batch is counted without decoding it."""
    fields = sorted((_OFF[n] + ev.FRAME, _CODES[n], n) for n in names)
    fmt, pos = "<", 0
    for off, code, _ in fields:
        fmt += f"{off - pos}x{code}"
        pos = off + struct.calcsize("<" + code)
    fmt += f"{ev.STRIDE - pos}x"
    order = [n for _, _, n in fields]
    return struct.Struct(fmt), tuple(order.index(n) for n in names)


# one stride of the framed batch: (netns, family, verdict), the rest skipped
_STRUCT, _ORDER = picker(("netns", "family", "verdict"))


class NetnsCounts:
    def __init__(self, limit: int = 32):
        self.limit = limit
        self._lock = threading.Lock()
        self._counts: Dict[Tuple[str, str], int] = collections.defaultdict(int)
        self._known: Dict[int, str] = {}
        #: sampled pressure transitions (no in-kernel counter moves for those)
        self.pressure_sampled = {"enter": 0, "leave": 0}

    def label(self, inode: int) -> str:
        lab = self._known.get(inode)
        if lab is None:
            lab = str(inode) if len(self._known) < self.limit else OTHER
            if lab != OTHER:
                self._known[inode] = lab
        return lab

    def add(self, payload: bytes, count: int) -> None:
        """Count a batch of framed records (back-to-back strides)."""
        seen = collections.Counter()
        n_i, f_i, v_i = _ORDER
        for rec in _STRUCT.iter_unpack(memoryview(payload)[:count * ev.STRIDE]):
            seen[(rec[n_i], rec[f_i], rec[v_i] if rec[f_i] == ev.PRESSURE else 0)] += 1
        with self._lock:
            for (inode, fam, verdict), n in seen.items():
                name = ev.FAMILIES.get(fam)
                if name is None:
                    continue
                if fam == ev.PRESSURE and inode == 0:
                    # made in user space from /proc/net/protocols: host-wide
                    key = "enter" if verdict & ev.VERDICT_ENTER else "leave"
                    self.pressure_sampled[key] += n
                    continue
                self._counts[(self.label(inode), name)] += n

    def register(self, inode: int) -> None:
        """A namespace whose series start at 0 before its first event: an
        increase() over its first events then counts them all."""
        with self._lock:
            self.label(inode)

    def snapshot(self) -> Dict[Tuple[str, str], int]:
        with self._lock:
            out = {(lab, fam): 0 for lab in self._known.values() for fam in ev.FAMILIES.values()
                   if fam != "pressure"}
            out.update(self._counts)
            return out

    def inodes(self) -> List[int]:
        with self._lock:
            return list(self._known)
