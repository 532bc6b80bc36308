"""Event records held for the next events block of a recording (`record`'s
file, `serve`'s flight recorder): raw records, never decoded, written as one
block once a second or once 1 MiB is held, so a SIGKILL loses at most the
last second and a storm is written in large blocks."""
from __future__ import annotations

import time
from typing import List, Tuple

FLUSH_BYTES = 1 << 20
FLUSH_SECONDS = 1.0


class PendingEvents:
    def __init__(self) -> None:
        self.pieces: List[bytes] = []
        self.count = 0
        self.bytes = 0
        self.last_flush = time.monotonic()

    def add(self, payload: bytes, count: int) -> bool:
        """Hold `count` records; True once a block's worth is held."""
        self.pieces.append(payload)
        self.count += count
        self.bytes += len(payload)
        return self.bytes >= FLUSH_BYTES

    def due(self) -> bool:
        """A second since the last flush."""
        return time.monotonic() - self.last_flush >= FLUSH_SECONDS

    def take(self) -> Tuple[List[bytes], int]:
        """What is held (its pieces and number of records), emptied: a flush,
        from when the next second is counted."""
        self.last_flush = time.monotonic()
        pieces, count = self.pieces, self.count
        self.pieces, self.count, self.bytes = [], 0, 0
        return pieces, count
