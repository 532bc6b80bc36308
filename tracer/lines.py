"""One event as one text line or one JSON object (`tcpoom trace`, `replay`)."""
from __future__ import annotations

import bisect
import datetime
import math
from typing import Dict, List, Optional, Tuple

from . import events as ev
from .events import Event

PAGE = 4096


class Clock:
    """Turns the kernel's CLOCK_MONOTONIC nanoseconds into wall time."""

    def __init__(self, wall_minus_mono_ns: int):
        self.offset_ns = wall_minus_mono_ns
        self._second = None      # the whole second last formatted, and its text
        self._iso = self._hms = ""

    @classmethod
    def now(cls) -> "Clock":
        import time
        return cls(time.time_ns() - time.monotonic_ns())

    def wall(self, ts_ns: int) -> datetime.datetime:
        return datetime.datetime.fromtimestamp((ts_ns + self.offset_ns) / 1e9)

    def _split(self, ts_ns: int) -> Tuple[int, int]:
        """(whole second, microseconds) exactly as datetime.fromtimestamp
        splits the same float (round half even), so the text is the same;
        the date and time of day are formatted once a second, not per event
        (a storm prints tens of thousands of lines a second)."""
        frac, whole = math.modf((ts_ns + self.offset_ns) / 1e9)
        us = round(frac * 1e6)
        if us >= 1_000_000:
            whole += 1
            us -= 1_000_000
        elif us < 0:
            whole -= 1
            us += 1_000_000
        second = int(whole)
        if second != self._second:
            at = datetime.datetime.fromtimestamp(second)
            self._second, self._iso, self._hms = second, at.isoformat(), at.strftime("%H:%M:%S")
        return second, us

    def iso(self, ts_ns: int) -> str:
        us = self._split(ts_ns)[1]
        return f"{self._iso}.{us:06d}"

    def hms(self, ts_ns: int) -> str:
        us = self._split(ts_ns)[1]
        return f"{self._hms}.{us:06d}"


class Sampled:
    """Values user space fills in where the kernel side could not read them,
    kept for a few seconds so an event gets the sample nearest its own time
    (a sysctl may have changed again by the time its line is printed)."""

    KEEP = 64       # samples: 6.4 s at the 100 ms period

    def __init__(self) -> None:
        self._history: List[Tuple[int, Optional[int], Optional[int]]] = []

    def add(self, ts_ns: int, orphans: Optional[int], max_orphans: Optional[int]) -> None:
        self._history.append((ts_ns, orphans, max_orphans))
        if len(self._history) > self.KEEP:
            del self._history[: len(self._history) - self.KEEP]

    def at(self, ts_ns: int) -> Tuple[Optional[int], Optional[int]]:
        """(orphans, max_orphans) sampled nearest to ts_ns."""
        h = self._history
        if not h:
            return None, None
        i = bisect.bisect_left(h, (ts_ns,))
        if i == len(h):
            near = h[-1]
        elif i == 0:
            near = h[0]
        else:       # the earlier one on a tie; once per event in a storm, so no lambdas
            before, after = h[i - 1], h[i]
            near = before if ts_ns - before[0] <= after[0] - ts_ns else after
        return near[1], near[2]


def _pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:.0f}%" if den > 0 else "?"


def _orphans(e: Event, s: Sampled) -> str:
    so, sm = s.at(e.ts_ns)
    o = e.orphans if e.orphans >= 0 else so
    m = e.max_orphans if e.max_orphans >= 0 else sm
    mark = "" if e.orphans >= 0 else "~"     # ~: sampled from /proc, not read at the decision
    return f"orphans={mark}{o if o is not None else '?'}/{m if m is not None else '?'}"


def text(e: Event, clock: Clock, sampled: Sampled) -> str:
    head = f"{clock.hms(e.ts_ns)} {e.family_name:<11}"
    tail = f"{e.local} > {e.remote} {e.state_name} pid={e.pid} {e.comm_str}"
    if e.family == ev.OOM_CHECK:
        shift = f"shift={'>=' if e.verdict & ev.VERDICT_SHIFT_MIN else ''}{e.shift}"
        why = ",".join(e.verdict_names()) or "?"
        mem = f"mem={e.memory_allocated}/{e.tcp_mem2}p"
        body = (f"{why} {e.caller_name} {shift} {_orphans(e, sampled)} {mem} "
                f"wq={e.wmem_queued}{' rst' if e.verdict & ev.VERDICT_RESET else ''}")
    elif e.family == ev.TW_OVERFLOW:
        body = f"tw={e.tw_count}/{e.max_tw_buckets} netns={e.netns}"
    elif e.family == ev.MEM_EXCEED:
        side = "recv" if e.verdict & ev.VERDICT_RECV else "send"
        # refused at the hard limit, or under pressure below it: a socket above
        # its fair share (tcp_mem[2] / sockets) is refused there too
        over = ">" if e.memory_allocated > e.tcp_mem2 else "<="
        why = "" if over == ">" else " under pressure, over its share"
        body = (f"{side} alloc={e.memory_allocated}p {over} tcp_mem[2]={e.tcp_mem2}p "
                f"({_pct(e.memory_allocated, e.tcp_mem2)}){why} rmem={e.rmem_alloc}/{e.rcvbuf} "
                f"wq={e.wmem_queued}/{e.sndbuf}")
    else:
        side = "enter" if e.verdict & ev.VERDICT_ENTER else "leave"
        mem = f"mem={e.memory_allocated}p" if e.memory_allocated >= 0 else "mem=?"
        body = f"{side} {mem} tcp_mem={e.tcp_mem0}/{e.tcp_mem1}/{e.tcp_mem2}p ({e.method_name})"
        if e.method == ev.SAMPLED:
            return f"{head} {body}"
    return f"{head} {body} {tail}"


def as_json(e: Event, clock: Clock, sampled: Sampled) -> Dict:
    d: Dict = {
        "family": e.family_name,
        "time": clock.iso(e.ts_ns),
        "ts_ns": e.ts_ns,
        "method": e.method_name,
        "pid": e.pid, "tid": e.tid, "comm": e.comm_str, "cpu": e.cpu, "netns": e.netns,
    }
    if e.af:
        d.update(local=e.local, remote=e.remote, state=e.state_name, sport=e.sport, dport=e.dport)
    fidelity = {}

    def put(name: str, value, field: str) -> None:
        d[name] = value if value != -1 else None
        fidelity[name] = e.fidelity(field)

    if e.family in (ev.OOM_CHECK, ev.MEM_EXCEED, ev.PRESSURE):
        put("memory_allocated", e.memory_allocated, "memory_allocated")
        d["tcp_mem"] = list(e.tcp_mem) if e.tcp_mem0 >= 0 else None
        fidelity["tcp_mem"] = e.fidelity("tcp_mem")
    if e.family == ev.OOM_CHECK:
        d["verdict"] = e.verdict_names()
        d["caller"] = e.caller_name
        put("shift", e.shift, "shift")
        d["shift_is_lower_bound"] = bool(e.verdict & ev.VERDICT_SHIFT_MIN)
        put("orphans", e.orphans, "orphans")
        put("max_orphans", e.max_orphans, "max_orphans")
        so, sm = sampled.at(e.ts_ns)
        if e.orphans < 0 and so is not None:
            d["orphans"] = so
            fidelity["orphans"] = "sampled"
        if e.max_orphans < 0 and sm is not None:
            d["max_orphans"] = sm
            fidelity["max_orphans"] = "sampled"
        d["reset_sent"] = bool(e.verdict & ev.VERDICT_RESET)
        d["reason"] = e.reason
        d["wmem_queued"] = e.wmem_queued
    elif e.family == ev.TW_OVERFLOW:
        put("tw_count", e.tw_count, "tw_count")
        put("max_tw_buckets", e.max_tw_buckets, "max_tw_buckets")
    elif e.family == ev.MEM_EXCEED:
        d["side"] = "recv" if e.verdict & ev.VERDICT_RECV else "send"
        d.update(rmem_alloc=e.rmem_alloc, rcvbuf=e.rcvbuf, wmem_queued=e.wmem_queued, sndbuf=e.sndbuf)
    elif e.family == ev.PRESSURE:
        d["transition"] = "enter" if e.verdict & ev.VERDICT_ENTER else "leave"
    fidelity["verdict"] = e.fidelity("verdict") if e.method != ev.SAMPLED else "sampled"
    d["fidelity"] = fidelity
    return d
