"""One lab per host at a time: tcp_mem and tcp_max_orphans are host-wide.

Two labs running at once would each save the other's tiny values as "the original" and
restore them, and each would count the other's orphan kills. A lab takes an exclusive
flock on LOCK_FILE for its whole life; the kernel drops it when the process dies, so a
killed lab never blocks the next one. Re-entrant within one process.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time

from .context import LabError

LOCK_FILE = "/run/tcpoom-lab.lock"
WAIT_S = 1800.0

_mutex = threading.Lock()
_depth = 0
_fd = -1


def acquire(wait_s: float = WAIT_S) -> None:
    global _depth, _fd
    with _mutex:
        if _depth:
            _depth += 1
            return
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LabError(f"another lab has held {LOCK_FILE} for {wait_s:.0f} s; "
                                   "one lab per host at a time") from None
                if not told:
                    print("lab: waiting for another lab on this host to finish", file=sys.stderr)
                    told = True
                time.sleep(0.2)
        _fd, _depth = fd, 1


def release() -> None:
    global _depth, _fd
    with _mutex:
        if _depth == 0:
            return
        _depth -= 1
        if _depth == 0:
            os.close(_fd)  # closing the descriptor drops the flock
            _fd = -1
