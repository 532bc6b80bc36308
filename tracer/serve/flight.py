"""The flight recorder: the last minutes on disk, frozen into an incident file
when a trigger fires.

The ring is a folder of short trace files (segments, the ordinary trace
format), each opening with a snapshot; the oldest go once the ring is longer
than the window or larger than its byte budget. A trigger opens
incident-<host>-<time>.tcpoom at once, copies the segments covering the
window before into it, and then writes every new block to it as well until
the window after has passed: a SIGKILL in the middle leaves a file readable
up to its last complete block. Markdown and HTML reports are written beside
it by a child process (`tcpoom report`), so the daemon's memory never holds a
report. A write that fails (a full disk) stops the recorder cleanly; the
metrics endpoint goes on.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import re
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from tracer.model import events as ev
from tracer.model import tracefile as tf
from ..errors import UsageError
from tracer.capture.pending import PendingEvents
from .segment_file import BlockFile, RecorderStopped

#: where `python3 -m tracer` finds this package (the report children's PYTHONPATH)
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRIGGERS = ("pressure", "orphan_kill", "tw_overflow", "refusal", "headroom", "sigusr1", "http")


@dataclasses.dataclass
class FlightOptions:
    directory: str
    before_s: float = 300.0
    after_s: float = 60.0
    segment_s: float = 30.0
    ring_bytes: int = 256 << 20
    keep_incidents: int = 20
    incident_bytes: int = 1 << 30
    triggers: Sequence[str] = TRIGGERS
    headroom: float = 0.10              # trigger below this fraction of a limit left
    reports: bool = True


@dataclasses.dataclass
class Segment:
    path: str
    seq: int
    start: float        # CLOCK_MONOTONIC seconds
    end: float
    bytes: int


class Incident:
    def __init__(self, path: str, reasons: List[str], at: float, until: float, file: BlockFile):
        self.path, self.reasons, self.at, self.until, self.file = path, reasons, at, until, file


def _lock(directory: str) -> int:
    """One serve per state directory: two would trim each other's ring."""
    import fcntl
    try:
        fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"--state-dir {directory} is in use by another tcpoom serve") from None
    except OSError:
        return -1       # a read-only directory: recording stops at the first write
    return fd


def _stamp(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


_NAME = re.compile(r"-(\d{8}T\d{6}Z)(?:-(\d+))?\.tcpoom$")


def _incident_order(name: str) -> tuple:
    """Oldest first: by the time in the name, then by the -N a second incident
    in the same second gets (by name alone "...Z-1.tcpoom" sorts before
    "...Z.tcpoom", and retention would delete the newer one)."""
    m = _NAME.search(name)
    return (m.group(1), int(m.group(2) or 0), name) if m else ("", 0, name)


class FlightRecorder:
    def __init__(self, opts: FlightOptions, header_obj: dict, log=None):
        self.opts = opts
        self.header = header_obj
        self.log = log or (lambda m: print(f"tcpoom: {m}", file=sys.stderr, flush=True))
        #: reason -> the limit it concerns, asked again when an incident is
        #: finished (a refusal's class is known once its records are read)
        self.limit_of: Optional[Callable[[str], Optional[str]]] = None
        self.ring_dir = os.path.join(opts.directory, "ring")
        self.incident_dir = os.path.join(opts.directory, "incidents")
        self.up = True
        self.stopped_reason = ""
        self.segments: List[Segment] = []
        self.incidents: Dict[str, int] = {}
        self.incident: Optional[Incident] = None
        self._current: Optional[BlockFile] = None
        self._pending = PendingEvents()
        self._last_snapshot: Optional[dict] = None
        self._reports: List[subprocess.Popen] = []
        try:
            for d in (opts.directory, self.ring_dir, self.incident_dir):
                os.makedirs(d, mode=0o700, exist_ok=True)
        except OSError as e:
            self._stop(f"{opts.directory}: {e.strerror}")
            return
        self._lock_fd = _lock(opts.directory)
        try:
            self._adopt()
            self._open_segment()
        except (OSError, RecorderStopped) as e:
            self._stop(str(e) if isinstance(e, RecorderStopped) else f"{opts.directory}: {e.strerror}")

    # ------------------------------------------------------------ ring
    def _adopt(self) -> None:
        """Segments left by an earlier run (a restart, a SIGKILL): kept in the
        ring, placed in time by their modification time (same boot)."""
        now_mono, now_wall = time.monotonic(), time.time()
        for name in sorted(os.listdir(self.ring_dir)):
            m = re.fullmatch(r"seg-(\d{8})\.tcpoom", name)
            if not m:
                continue
            path = os.path.join(self.ring_dir, name)
            st = os.stat(path)
            end = now_mono - (now_wall - st.st_mtime)
            self.segments.append(Segment(path, int(m.group(1)), end - self.opts.segment_s, end, st.st_size))
        self._trim(now_mono)

    def _open_segment(self) -> None:
        seq = self.segments[-1].seq + 1 if self.segments else 1
        path = os.path.join(self.ring_dir, f"seg-{seq:08d}.tcpoom")
        self._current = BlockFile(path, tf.encode_json(tf.HEADER, self.header))
        now = time.monotonic()
        self.segments.append(Segment(path, seq, now, now, self._current.good))
        if self._last_snapshot is not None:
            # every segment opens with the figures of its start: an incident
            # cut from any segment has a baseline for the kernel's counters
            self._write([tf.encode_json(tf.SNAPSHOT, self._last_snapshot)], tee=False)

    def _trim(self, now: float) -> None:
        keep_from = now - self.opts.before_s - self.opts.segment_s
        while len(self.segments) > 1 and (
                self.segments[0].end < keep_from or
                sum(s.bytes for s in self.segments) > self.opts.ring_bytes):
            old = self.segments.pop(0)
            try:
                os.unlink(old.path)
            except OSError:
                pass

    def _write(self, blocks: List[bytes], tee: bool = True) -> None:
        if not self.up:
            return
        try:
            if self._current is not None:
                self._current.write(blocks)
                seg = self.segments[-1]
                seg.bytes = self._current.good
                seg.end = time.monotonic()
            if tee and self.incident is not None:
                self.incident.file.write(blocks)
        except RecorderStopped as e:
            self._stop(str(e))

    def _stop(self, why: str) -> None:
        if not self.up:
            return
        self.up = False
        self.stopped_reason = why
        self.log(f"flight recorder stopped: {why}; the files written stay readable, metrics go on")
        for f in (self._current, self.incident.file if self.incident else None):
            if f is not None:
                try:
                    f.close(None)
                except OSError:
                    pass
        self._current = None
        self.incident = None
        self._pending.take()         # dropped: nothing is written any more

    # ------------------------------------------------------------ input
    def add_events(self, payload: bytes, count: int) -> None:
        if not self.up or not count:
            return
        if self._pending.add(payload, count):
            self.flush()

    def flush(self) -> None:
        pieces, count = self._pending.take()
        if not pieces:
            return
        self._write(list(tf.encode_events_parts(pieces, ev.EVENT_SIZE, count, ev.STRIDE, ev.FRAME)))

    def add_snapshot(self, snap: dict, counters: Optional[List[int]]) -> None:
        self.flush()        # events before the figures that follow them
        self._last_snapshot = snap
        blocks = [tf.encode_json(tf.SNAPSHOT, snap)]
        if counters is not None:
            blocks.append(tf.encode_json(tf.COUNTERS, {"ts_ns": time.monotonic_ns(), "counters": counters}))
        self._write(blocks)

    def tick(self) -> None:
        now = time.monotonic()
        if self._pending.due():
            self.flush()
        if not self.up:
            return
        if self.incident is not None and now >= self.incident.until:
            self._finish_incident()
        if self._current is not None and (now - self.segments[-1].start >= self.opts.segment_s or
                                          self._current.good >= self.opts.ring_bytes // 4):
            self._rotate()
        self._trim(now)
        self._reports = [p for p in self._reports if p.poll() is None]

    def _rotate(self) -> None:
        self.flush()
        try:
            self._current.close({"rotated": True})
        except (RecorderStopped, OSError) as e:
            self._stop(str(e))
            return
        self._current = None
        try:
            self._open_segment()
        except RecorderStopped as e:
            self._stop(str(e))

    # ------------------------------------------------------------ incidents
    def trigger(self, reason: str, limit: Optional[str] = None) -> bool:
        if not self.up:
            return False
        if self.incident is not None:
            if reason not in self.incident.reasons:
                self.incident.reasons.append(reason)
            return True
        self.flush()
        now, wall = time.monotonic(), time.time()
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"
        stamp = _stamp(wall)
        # a later incident in the same second is -2, -3...: numbered past every one
        # of that second still on disk, even where retention removed an earlier
        # one, so the newest is always last in _incident_order
        same = [_incident_order(os.path.basename(p))[1] or 1 for p in self.incident_files()
                if _incident_order(os.path.basename(p))[0] == stamp]
        n = max(same) + 1 if same else 1
        path = os.path.join(self.incident_dir, f"incident-{host}-{stamp}" + (f"-{n}" if n > 1 else "") + ".tcpoom")
        while os.path.exists(path):       # another file of that name (not an incident of ours)
            n += 1
            path = os.path.join(self.incident_dir, f"incident-{host}-{stamp}-{n}.tcpoom")
        self._retain(extra=1)
        hdr = dict(self.header, incident={
            "trigger": reason, "limit": limit, "at_realtime_ns": int(wall * 1e9), "at_monotonic_ns": int(now * 1e9),
            "before_s": self.opts.before_s, "after_s": self.opts.after_s, "host": socket.gethostname()})
        try:
            f = BlockFile(path, tf.encode_json(tf.HEADER, hdr))
            for seg in self.segments:
                if seg.end < now - self.opts.before_s:
                    continue
                for block in self._blocks_of(seg.path):    # one block at a time: bounded memory
                    f.write([block])
        except RecorderStopped as e:
            self._stop(str(e))
            return False
        self.incident = Incident(path, [reason], now, now + self.opts.after_s, f)
        self.log(f"incident ({reason}): recording {self.opts.before_s:.0f} s before and "
                 f"{self.opts.after_s:.0f} s after into {path}")
        return True

    @staticmethod
    def _blocks_of(path: str):
        try:
            with tf.TraceReader(path) as r:
                for b in r.blocks():
                    if b.type not in (tf.HEADER, tf.TRAILER):
                        yield tf.encode_block(b.type, b.payload)
        except (tf.TraceFileError, OSError):
            pass        # a segment torn by a SIGKILL: its complete blocks were read

    def _finish_incident(self) -> None:
        inc, self.incident = self.incident, None
        self.flush()
        if self._last_snapshot is not None:
            try:
                inc.file.write([tf.encode_json(tf.SNAPSHOT, self._last_snapshot)])
            except RecorderStopped as e:
                self._stop(str(e))
        try:
            limits = {r: self.limit_of(r) for r in inc.reasons} if self.limit_of else {}
            inc.file.close({"stop_reason": "incident", "incident": {"triggers": inc.reasons, "limits": limits}})
        except (RecorderStopped, OSError) as e:
            self._stop(str(e))
            return
        for r in inc.reasons:
            self.incidents[r] = self.incidents.get(r, 0) + 1
        self.log(f"incident written: {inc.path} ({', '.join(inc.reasons)})")
        if self.opts.reports:
            self._report(inc.path)
        self._retain()

    def _report(self, path: str) -> None:
        base = path[:-len(".tcpoom")]
        for fmt, ext in (("markdown", "md"), ("html", "html")):
            try:
                self._reports.append(subprocess.Popen(
                    [sys.executable, "-m", "tracer", "report", "--format", fmt, "-o", f"{base}.{ext}", path],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    # 0600 like the trace: reports name processes and peers
                    preexec_fn=lambda: os.umask(0o077),
                    # _ROOT is a directory, or the zipapp itself (scripts/build-pyz): a path entry
                    env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                        [_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])),
                    cwd="/"))
            except OSError as e:
                self.log(f"report of {path}: {e.strerror}")

    def incident_files(self) -> List[str]:
        try:
            names = os.listdir(self.incident_dir)
        except OSError:
            return []
        return [os.path.join(self.incident_dir, n) for n in
                sorted((n for n in names if n.startswith("incident-") and n.endswith(".tcpoom")),
                       key=_incident_order)]

    def _retain(self, extra: int = 0) -> None:
        """Keep at most keep_incidents incidents (leaving room for `extra` new
        ones) and incident_bytes in all, reports included; oldest go first."""
        files = self.incident_files()

        def group(p: str) -> List[str]:
            base = p[:-len(".tcpoom")]
            return [x for x in (p, base + ".md", base + ".html") if os.path.exists(x)]

        def size(p: str) -> int:
            return sum(os.path.getsize(x) for x in group(p))

        active = self.incident.path if self.incident else None
        files = [f for f in files if f != active]
        total = sum(size(f) for f in files)
        # the newest incident stays, even alone over the byte budget
        newest = files[-1] if files and not extra else None
        while files and files[0] != newest and (
                len(files) + extra > self.opts.keep_incidents or total > self.opts.incident_bytes):
            old = files.pop(0)
            total -= size(old)
            for x in group(old):
                try:
                    os.unlink(x)
                except OSError:
                    pass

    # ------------------------------------------------------------ state
    def stats(self) -> Dict[str, float]:
        return {"up": 1 if self.up else 0, "bytes": sum(s.bytes for s in self.segments)}

    def close(self) -> None:
        if self.incident is not None:
            self._finish_incident()
        self.flush()
        if self._current is not None:
            try:
                self._current.close({"stop_reason": "stopped"})
            except (RecorderStopped, OSError):
                pass
            self._current = None
        for p in self._reports:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if getattr(self, "_lock_fd", -1) >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
