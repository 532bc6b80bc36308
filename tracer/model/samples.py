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
        if not self._history:
            return None, None
        i = bisect.bisect_left(self._history, (ts_ns,))
        near = [self._history[j] for j in (i - 1, i) if 0 <= j < len(self._history)]
        _, orphans, max_orphans = min(near, key=lambda h: abs(h[0] - ts_ns))
        return orphans, max_orphans
