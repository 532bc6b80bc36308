"""What user space adds to the kernel's records: the figures sampled from /proc
near their time (their wall clock is model/clock.py)."""
from __future__ import annotations

import bisect
from typing import List, Optional, Tuple


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
