"""Where event lines go: straight to a file descriptor (`trace`, `replay`)."""
from __future__ import annotations

import os


class Output:
    """Writes straight to the file descriptor, finishing partial writes itself.
    A stop signal arriving while a full pipe blocks the write must neither cut
    a line nor repeat one (buffered text streams can do either)."""

    def __init__(self, stream):
        stream.flush()
        self.fd = stream.fileno()

    def write(self, text: str) -> None:
        data = memoryview(text.encode())
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
