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
        self._second = None      # the whole second last formatted, and its text
        self._date_time = self._hms = ""

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
        if timespec != "microseconds":
            return self.wall(ts_ns).isoformat(timespec=timespec)
        us = self._micros(ts_ns)
        return f"{self._date_time}.{us:06d}+00:00"

    def hms(self, ts_ns: int) -> str:
        """23:51:49.087123 (UTC): the time of day of a terminal line."""
        us = self._micros(ts_ns)
        return f"{self._hms}.{us:06d}"

    def _micros(self, ts_ns: int) -> int:
        """The microseconds of ts_ns; the date and time of day of its second are
        formatted once a second, not per event (a storm prints tens of thousands
        of lines a second)."""
        sec, ns = divmod(ts_ns + self.offset_ns, _NS)
        if sec != self._second:
            at = datetime.datetime.fromtimestamp(sec, UTC)
            self._second = sec
            self._date_time, self._hms = at.strftime("%Y-%m-%dT%H:%M:%S"), at.strftime("%H:%M:%S")
        return ns // 1000
