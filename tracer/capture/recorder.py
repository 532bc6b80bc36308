"""Writes a recording: raw event records copied in batches, never decoded.

Events are buffered for at most a second (or 1 MiB) and then written as one
block straight to the file descriptor, so a SIGKILL loses at most the last
second. A write that fails (a full disk) truncates the file back to its last
complete block, so what was recorded stays readable.
"""
from __future__ import annotations

import errno
import glob
import os
import time
from typing import Callable, List, Optional

from tracer.model import events as ev
from tracer import outfile
from tracer.model import tracefile as tf
from tracer.errors import TcpoomError
from .pending import PendingEvents


class RecordingStopped(TcpoomError):
    """The recording could not go on (a full disk); the file stays readable."""


class Recorder:
    def __init__(self, path: str, header: dict, record_size: int, compress: bool = False,
                 max_size: Optional[int] = None, rotate: Optional[int] = None, keep: int = 0,
                 force: bool = False):
        self.base = path
        self.force = force
        self.header = header
        self.record_size = record_size
        self.compress = compress
        self.max_size = max_size
        self.rotate = rotate
        self.keep = keep
        self.events = 0
        self.bytes = 0                  # across all files
        self.files: List[str] = []
        self.full = False               # --max-size reached
        self._pending = PendingEvents()
        self._seq = 0
        self._fd = -1
        self._good = 0                  # offset after the last complete block
        self.on_rotate: Optional[Callable[[], List[bytes]]] = None
        if rotate and force:
            # --force replaces an old ring whole: left in place, its files
            # would read as part of this recording, and --keep would delete
            # the new files (they sort first) rather than the old ones
            for old in self._ring():
                if outfile.is_recording(old):
                    os.unlink(old)
        self._open_next()

    # ------------------------------------------------------------ files
    def _name(self) -> str:
        return f"{self.base}.{self._seq:06d}" if self.rotate else self.base

    def _open_next(self) -> None:
        self._seq += 1
        path = self._name()
        # an existing recording is replaced only when asked (--force), and
        # never truncated in place: the new file starts as a temporary file
        # beside it (0600: recordings name processes and peers of a
        # production host) and takes the name once its header is written, so
        # the name always holds a readable recording.
        try:
            outfile.check(path, (), self.force)
        except outfile.OutputError as e:
            raise RecordingStopped(str(e)) from None
        self._good = 0
        if outfile.is_special(path):        # /dev/null, a FIFO: written in place
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as e:
                raise RecordingStopped(f"cannot write {path}: {e.strerror}") from None
            self.path = path
            self._write(tf.magic_bytes() + tf.encode_json(tf.HEADER, self.header, self.compress))
        else:
            try:
                self._fd, tmp = outfile.temp_beside(path, 0o600)
            except outfile.OutputError as e:
                raise RecordingStopped(str(e)) from None
            self.path = tmp
            self._write(tf.magic_bytes() + tf.encode_json(tf.HEADER, self.header, self.compress))
            try:
                outfile.rename_into_place(tmp, path)
            except outfile.OutputError as e:
                os.close(self._fd)
                self._fd = -1
                raise RecordingStopped(str(e)) from None
        self.path = path
        self.files.append(path)
        if self.rotate and self.keep:
            self._drop_old()

    def _ring(self) -> List[str]:
        return sorted(glob.glob(glob.escape(self.base) + ".[0-9][0-9][0-9][0-9][0-9][0-9]"))

    def _drop_old(self) -> None:
        for old in self._ring()[:-self.keep]:
            try:
                os.unlink(old)
            except OSError:
                pass

    def _write(self, data) -> None:
        """Write bytes, or a list of buffers in a row (one writev, no join)."""
        parts = [memoryview(p) for p in (data if isinstance(data, list) else [data])]
        total = sum(len(p) for p in parts)
        try:
            while parts:
                n = os.writev(self._fd, parts[:1024])      # IOV_MAX
                while parts and n >= len(parts[0]):
                    n -= len(parts[0])
                    parts.pop(0)
                if parts and n:
                    parts[0] = parts[0][n:]
        except OSError as e:
            # keep the file readable: back to the end of the last complete block
            try:
                os.ftruncate(self._fd, self._good)
            except OSError:
                pass
            what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e.strerror
            raise RecordingStopped(f"{what} writing {self.path}: recording stopped; "
                                   f"the file is readable up to its last complete block") from None
        self._good += total
        self.bytes += total

    # ------------------------------------------------------------ blocks
    def add_events(self, payload: bytes, count: int) -> None:
        if not count:
            return
        if self._pending.add(payload, count):
            self.flush()

    def add_json(self, btype: int, obj) -> None:
        # not ordered with the pending events: readers place snapshots by ts_ns
        self._write(tf.encode_json(btype, obj, self.compress))
        self._after_block()

    def tick(self) -> None:
        """Called often: writes what is pending once a second."""
        if self._pending.pieces and self._pending.due():
            self.flush()

    def flush(self) -> None:
        pieces, count = self._pending.take()
        if not pieces:
            return
        if self.compress:
            self._write(tf.encode_events(b"".join(pieces), self.record_size, count, True, ev.STRIDE, ev.FRAME))
        else:
            self._write(tf.encode_events_parts(pieces, self.record_size, count, ev.STRIDE, ev.FRAME))
        self.events += count
        self._after_block()

    def _after_block(self) -> None:
        size = self._good
        if self.max_size and self.bytes >= self.max_size:
            self.full = True
        elif self.rotate and size >= self.rotate:
            self._close_file({"rotated": True})
            self._open_next()
            if self.on_rotate:
                for block in self.on_rotate():      # a fresh file starts with a snapshot
                    self._write(block)

    def _close_file(self, trailer: dict) -> None:
        self._write(tf.encode_json(tf.TRAILER, dict(trailer, ts_ns=time.monotonic_ns()), self.compress))
        os.close(self._fd)
        self._fd = -1

    def close(self, trailer: dict) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
            self._close_file(dict(trailer, events=self.events))
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
