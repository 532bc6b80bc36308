"""One event as one text line or one JSON object (`tcpoom trace`, `replay`)."""
from __future__ import annotations

import bisect
from typing import Dict, List, Optional, Tuple

from . import events as ev
from .clock import Clock  # noqa: F401  (one clock model: clock.py)
from .event_schema import record
from .events import Event

PAGE = 4096


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
        if not self._history:
            return None, None
        i = bisect.bisect_left(self._history, (ts_ns,))
        near = [self._history[j] for j in (i - 1, i) if 0 <= j < len(self._history)]
        _, orphans, max_orphans = min(near, key=lambda h: abs(h[0] - ts_ns))
        return orphans, max_orphans


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
    """The event in the one documented schema (event_schema.py, docs/events.md)."""
    return record(e, clock, sampled)
