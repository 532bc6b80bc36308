"""The one clock model: events carry CLOCK_MONOTONIC nanoseconds; a recording's
header holds one (monotonic, realtime) pair taken together, and every wall time
shown anywhere (trace lines, JSONL, CSV, reports) is that offset added and
written as RFC 3339 with its UTC offset, in UTC ("+00:00"): a join of an
export with a report, or of two hosts' files, is never silently hours off.
"""
from __future__ import annotations

import datetime
from typing import Optional

_NS = 1_000_000_000
UTC = datetime.timezone.utc


class Clock:
    """Turns the kernel's CLOCK_MONOTONIC nanoseconds into wall time (UTC)."""

    def __init__(self, wall_minus_mono_ns: int):
        self.offset_ns = wall_minus_mono_ns

    @classmethod
    def now(cls) -> "Clock":
        import time
        return cls(time.time_ns() - time.monotonic_ns())

    @classmethod
    def of(cls, header: dict) -> "Clock":
        """The clock of a recording, from the pair in its header."""
        c = header.get("clock") or {}
        return cls(c.get("realtime_ns", 0) - c.get("monotonic_ns", 0))

    def wall(self, ts_ns: int) -> datetime.datetime:
        # whole seconds and microseconds apart: a float of epoch nanoseconds
        # is off by up to a quarter of a microsecond
        sec, ns = divmod(ts_ns + self.offset_ns, _NS)
        return datetime.datetime.fromtimestamp(sec, UTC) + datetime.timedelta(microseconds=ns // 1000)

    def iso(self, ts_ns: Optional[int], timespec: str = "microseconds") -> Optional[str]:
        """RFC 3339: 2026-11-21T23:51:49.087123+00:00."""
        if ts_ns is None:
            return None
        return self.wall(ts_ns).isoformat(timespec=timespec)

    def hms(self, ts_ns: int) -> str:
        """23:51:49.087123 (UTC): the time of day of a terminal line."""
        return self.wall(ts_ns).strftime("%H:%M:%S.%f")
