"""The files the flight recorder writes: trace files (docs/trace-format.md)
written block by block, each failed write truncated back to the last complete
block, so a full disk or a SIGKILL never leaves half a block behind."""
from __future__ import annotations

import errno
import os
import sys
import time
from typing import List, Optional

from tracer.capture.header import header as capture_header
from tracer.model import tracefile as tf
from ..errors import TcpoomError


class RecorderStopped(TcpoomError):
    """A write failed (a full disk): recording stops, the files stay readable."""



def header(cap, filters) -> dict:
    """The trace header of serve's files: the recorders' own (capture/header.py),
    marked as serve's."""
    return dict(capture_header(cap, sys.argv, filters), serve=True)


class BlockFile:
    """One trace file written block by block; a failed write truncates it back
    to its last complete block and raises RecorderStopped."""

    def __init__(self, path: str, header_block: bytes):
        self.path = path
        self.good = 0
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise RecorderStopped(f"cannot create {path}: {e.strerror}") from None
        os.fchmod(self.fd, 0o600)
        try:
            self.write([tf.magic_bytes(), header_block])
        except RecorderStopped:
            # not even the header fitted: leave no empty file behind
            os.close(self.fd)
            self.fd = -1
            try:
                os.unlink(path)
            except OSError:
                pass
            raise

    def write(self, parts: List[bytes]) -> None:
        if self.fd < 0:
            return
        data = b"".join(parts)
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as e:
            try:
                os.ftruncate(self.fd, self.good)
            except OSError:
                pass
            what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e.strerror
            raise RecorderStopped(f"{what} writing {self.path}") from None
        self.good += len(data)

    def close(self, trailer: Optional[dict]) -> None:
        if self.fd < 0:
            return
        try:
            if trailer is not None:
                self.write([tf.encode_json(tf.TRAILER, dict(trailer, ts_ns=time.monotonic_ns()))])
        finally:
            os.close(self.fd)
            self.fd = -1
