"""Single keypresses from the terminal, without waiting (q to quit, space to pause)."""
from __future__ import annotations

import os
import select
import sys
import termios
import tty
from typing import Optional


class Keys:
    def __init__(self) -> None:
        self.fd: Optional[int] = None
        self._saved = None
        if sys.stdin.isatty():
            self.fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)

    def read(self) -> str:
        """Keys pressed since the last call ('' if none)."""
        if self.fd is None:
            return ""
        out = ""
        while select.select([self.fd], [], [], 0)[0]:
            ch = os.read(self.fd, 32)
            if not ch:
                break
            out += ch.decode(errors="ignore")
        return out

    def close(self) -> None:
        if self.fd is not None and self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self.fd = None
