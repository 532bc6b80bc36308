"""The one clock of a running capture: once a second, the /proc snapshot, the
in-kernel counters, the events lost since the last second and, while TCP is
under memory pressure, the sockets holding the most memory.

`record`, `live` (and a flight recorder) all see the same seconds: each
registers what it does with one (write blocks, redraw a dashboard, export
gauges) and what it does on every call (flush, read keys), and hands the tick
to `Capture.run`, which calls it every sampling period (100 ms).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from tracer.model import events as ev
from tracer.host import snapshots
from tracer.host.snapshots import HOLDERS_EVERY_S

SECOND_S = 1.0


@dataclass
class Second:
    """What one tick of the clock saw."""
    now: float                      # time.monotonic() of the tick
    snapshot: dict                  # snapshots.take(): sockstat, TcpExt, limits, pressure
    counters: Optional[List[int]]   # the in-kernel counters (events.CNT_*); None without BPF
    lost: Dict[str, int]            # ring-buffer losses since the last second, by family
    # the sockets holding the most memory (with "reason"), or {"error", "reason"}:
    # when pressure starts and every HOLDERS_EVERY_S while it lasts
    holders: Optional[dict] = None
    # calls the kernel recorded as missed by the programs since the last second
    # (recursion misses, kprobe missed, unpaired kprobe entries), by family
    missed: Dict[str, int] = field(default_factory=dict)
    # ... and in all since the start (None: this kernel counts none for that family)
    missed_total: Dict[str, Optional[int]] = field(default_factory=dict)

    @property
    def ts_ns(self) -> int:
        return self.snapshot["ts_ns"]


def holders_snapshot(netns: Optional[int], reason: str) -> dict:
    """The holders, or why they could not be read: a bonus, never a reason to
    stop a capture."""
    try:
        from tracer.host import holders      # netlink and /proc scans: loaded when needed
        snap = holders.snapshot(netns=netns or None)
    except Exception as e:
        snap = {"error": str(e)}
    snap["reason"] = reason
    return snap


class Tick:
    """Called by `Capture.run` every sampling period; does the once-a-second
    work when it is due and hands the `Second` to every listener."""

    def __init__(self, session, netns: Optional[int], period_s: float = SECOND_S,
                 holders_every_s: float = HOLDERS_EVERY_S,
                 missed: Optional[Callable[[Optional[List[int]]], Dict[str, Optional[int]]]] = None):
        # anything with counters() (a started Capture: its TIME_WAIT overflows
        # confirmed by user space included); None for a /proc-only capture
        self.session = session
        self.netns = netns or None
        self.period_s = period_s
        self.holders_every_s = holders_every_s
        self._seconds: List[Callable[[Second], None]] = []
        self._calls: List[Callable[[float], None]] = []
        self._at = 0.0
        self._holders_at = 0.0
        self._pressure = False
        self._lost = [0] * ev.CNT_MAX
        # Capture.missed: the kernel's miss counts by family, given the counters
        self._missed_fn = missed
        self._missed: Dict[str, int] = {}
        self.last: Optional[Second] = None

    def on_second(self, fn: Callable[[Second], None]) -> "Tick":
        self._seconds.append(fn)
        return self

    def on_call(self, fn: Callable[[float], None]) -> "Tick":
        """`fn(now)` on every call, after the second's listeners."""
        self._calls.append(fn)
        return self

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._at >= self.period_s:
            self._at = now
            second = self.second(now)
            self.last = second
            for fn in self._seconds:
                fn(second)
        for fn in self._calls:
            fn(now)

    def second(self, now: float) -> Second:
        snap = snapshots.take(self.netns)
        counters = self.session.counters() if self.session is not None else None
        lost = {ev.FAMILIES[i - ev.CNT_LOST_BASE]: counters[i] - self._lost[i]
                for i in range(ev.CNT_LOST_BASE, ev.CNT_LOST_END)
                if i - ev.CNT_LOST_BASE in ev.FAMILIES and counters[i] > self._lost[i]} \
            if counters is not None else {}
        if lost:
            self._lost = list(counters)
        pressure = bool(snap.get("pressure"))
        starts = pressure and not self._pressure
        holders = None
        if pressure and (starts or now - self._holders_at >= self.holders_every_s):
            holders = holders_snapshot(self.netns, "pressure started" if starts else "pressure continues")
            self._holders_at = now
        self._pressure = pressure
        total = self._missed_fn(counters) if self._missed_fn is not None else {}
        missed = {f: n - self._missed.get(f, 0) for f, n in total.items()
                  if n is not None and n > self._missed.get(f, 0)}
        self._missed.update({f: n for f, n in total.items() if n is not None})
        return Second(now, snap, counters, lost, holders, missed, total)
