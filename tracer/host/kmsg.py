"""Count the kernel log lines about TCP socket memory, read from /dev/kmsg.

The TCP memory messages go through net_ratelimit(): a burst of 10 per 5 s, after which the
kernel drops them and, the next time one is allowed, logs "net_ratelimit: N callbacks
suppressed". So a storm of thousands of decisions shows up as about 10 lines, and the
"suppressed" line usually arrives only with a later message, often after the scenario ended.
Comparing these counts with the real counters is the point of the lab and of
the live view's "kernel log vs reality" panel.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

ORPHANS = "TCP: too many orphaned sockets"
OUT_OF_MEMORY = "TCP: out of memory -- consider tuning tcp_mem"
SUPPRESSED = "callbacks suppressed"
# older kernels' wording (before 3.3 one message covered both causes; the
# TIME_WAIT line exists only up to 2.6.36)
OLD_OUT_OF_SOCKET_MEMORY = "Out of socket memory"
OLD_TW_OVERFLOW = "time wait bucket table overflow"
PATTERNS = (ORPHANS, OUT_OF_MEMORY, SUPPRESSED)
TCP_PATTERNS = (ORPHANS, OUT_OF_MEMORY, OLD_OUT_OF_SOCKET_MEMORY, OLD_TW_OVERFLOW)

_SUPPRESSED_RE = re.compile(r"net_ratelimit: (\d+) callbacks suppressed")

# A full ring is a few MB at most; stop reading long before anything could loop forever.
_MAX_RECORDS = 100_000


class KernelLog:
    """Messages the kernel logs from now on (opened at the end of the ring)."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.error: Optional[str] = None
        self._fd: Optional[int] = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as exc:  # not root, or dmesg_restrict without CAP_SYSLOG
            self.error = f"{path}: {exc.strerror}"
            self.close()

    def read_new(self) -> List[str]:
        """Message texts logged since the last call (or since opening)."""
        messages: List[str] = []
        if self._fd is None:
            return messages
        for _ in range(_MAX_RECORDS):
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                break  # caught up
            except BrokenPipeError:
                continue  # records were overwritten before we read them; the next read resumes
            if not record:
                break
            # "<prio>,<seq>,<usec>,<flags>[,...];<message>\n[ KEY=value continuation lines]"
            header, _, body = record.decode("utf-8", "replace").partition(";")
            messages.append(body.split("\n", 1)[0])
        return messages

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "KernelLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def count_lines(messages: List[str]) -> Dict[str, int]:
    """How many messages contain each of PATTERNS."""
    return {pattern: sum(pattern in m for m in messages) for pattern in PATTERNS}


def suppressed_total(messages: List[str]) -> int:
    """The sum of N over "net_ratelimit: N callbacks suppressed" lines."""
    return sum(int(m.group(1)) for m in map(_SUPPRESSED_RE.search, messages) if m)
