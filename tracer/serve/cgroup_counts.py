"""Events counted per cgroup and family, and refusals per class, as they arrive
from the ring.

The cgroup of an event is its socket's memory cgroup where the socket was
charged to one (the cgroup whose socket memory the headroom gauges show),
else the owner's, the socket's or the context's cgroup v2 id (the order of
Event.who_cgroup). On a v1 host a socket is charged to its memcg only while
that memcg has a kmem.tcp limit (tcpmem_active), so most sockets there carry a
v2 id only.

Labels are bounded: the first `limit` cgroups with events get their own series
(the largest of a batch first) and keep them, because a counter series must not
go backwards nor a cgroup move in and out of "other" (increase() would count
the move as events); events of later cgroups go to cgroup="other". A cgroup
whose directory is gone and which had no event for `evict_s` seconds gives its
slot back (pods churn; a fleet would otherwise fill the slots with the dead).
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Dict, List, Optional, Tuple

from tracer.model import events as ev
from tracer.model.containers import V1_MEMORY, V2
from .netns_counts import picker

OTHER = "other"
#: a cgroup: (hierarchy kind, id); OTHER for the bucket
Key = Tuple[str, int]
_STRUCT, _ORDER = picker(("family", "memcg", "owner_cgroup", "sk_cgroup", "cgroup", "mem_class"))
#: refusal classes, all exported from the first scrape (increase() sees the first refusal)
CLASSES = tuple(ev.MEM_CLASSES[c] for c in sorted(ev.MEM_CLASSES))
#: families a cgroup is labelled for (pressure is host-wide)
CGROUP_FAMILIES = tuple(n for f, n in sorted(ev.FAMILIES.items()) if f != ev.PRESSURE)


def key_of(memcg: int, owner: int, sk: int, ctx: int) -> Optional[Key]:
    if memcg:
        return (V1_MEMORY, memcg)
    v2 = owner or sk or ctx
    return (V2, v2) if v2 else None


class CgroupCounts:
    def __init__(self, limit: int = 32, evict_s: float = 300.0, clock=time.monotonic):
        self.limit = limit
        self.evict_s = evict_s
        self._clock = clock
        self._lock = threading.Lock()
        #: (key or OTHER, family, class) -> events; class "" except for mem_exceed
        self._counts: Dict[Tuple[object, str, str], int] = collections.defaultdict(int)
        self._slots: Dict[Key, float] = {}       # key -> last event (monotonic)
        #: refusals by class, host-wide (every refusal, whatever its cgroup)
        self.classes: Dict[str, int] = {c: 0 for c in CLASSES}

    def add(self, payload, count: int) -> None:
        """Count a batch of framed records (back-to-back strides)."""
        seen: "collections.Counter" = collections.Counter()
        f_i, m_i, o_i, s_i, c_i, k_i = _ORDER
        for rec in _STRUCT.iter_unpack(memoryview(payload)[:count * ev.STRIDE]):
            fam = rec[f_i]
            if fam == ev.PRESSURE or fam not in ev.FAMILIES:
                continue
            cls = ev.MEM_CLASSES.get(rec[k_i], "unknown") if fam == ev.MEM_EXCEED else ""
            seen[(key_of(rec[m_i], rec[o_i], rec[s_i], rec[c_i]), ev.FAMILIES[fam], cls)] += 1
        if not seen:
            return
        now = self._clock()
        by_key: "collections.Counter" = collections.Counter()
        for (key, _, _), n in seen.items():
            by_key[key] += n
        with self._lock:
            # the largest of the batch first: a storm from one cgroup takes a slot
            for key, _ in by_key.most_common():
                if key is not None and key not in self._slots and len(self._slots) < self.limit:
                    self._slots[key] = now
            for (key, fam, cls), n in seen.items():
                if cls:
                    self.classes[cls] += n
                if key in self._slots:
                    self._slots[key] = now
                    self._counts[(key, fam, cls)] += n
                else:
                    self._counts[(OTHER, fam, cls)] += n

    def snapshot(self) -> Dict[Tuple[object, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def keys(self) -> List[Key]:
        with self._lock:
            return list(self._slots)

    def evict(self, gone) -> List[Key]:
        """Give back the slots of cgroups `gone(key)` says are removed and that
        had no event for evict_s. Their series end (Prometheus marks them stale)."""
        now = self._clock()
        with self._lock:
            idle = [k for k, t in self._slots.items() if now - t >= self.evict_s]
        out = [k for k in idle if gone(k)]
        if out:
            with self._lock:
                for k in out:
                    self._slots.pop(k, None)
                for ck in [ck for ck in self._counts if ck[0] in out]:
                    del self._counts[ck]
        return out
