"""The files the flight recorder writes: trace files (docs/trace-format.md)
written block by block, each failed write truncated back to the last complete
block, so a full disk or a SIGKILL never leaves half a block behind."""
from __future__ import annotations

import dataclasses
import errno
import os
import socket
import sys
import time
from typing import List, Optional

from tracer import __version__
from tracer.host import procfs
from tracer.model import events as ev
from tracer.model import tracefile as tf
from ..errors import TcpoomError


class RecorderStopped(TcpoomError):
    """A write failed (a full disk): recording stops, the files stay readable."""



def header(cap, filters) -> dict:
    """The trace header (docs/trace-format.md) of serve's files; without a
    capture (/proc only) the plan says engine none."""
    plan = cap.plan.to_json() if cap is not None else {"kernel": os.uname().release, "engine": "none",
                                                        "notes": ["BPF not loaded: /proc only"],
                                                        "config": {}, "families": {}}
    h = {
        "format": "tcpoom-trace",
        "tcpoom_version": __version__,
        "hostname": socket.gethostname(),
        "kernel": os.uname().release,
        "machine": os.uname().machine,
        "clock": {"monotonic_ns": time.monotonic_ns(), "realtime_ns": time.time_ns()},
        "boot_time_ns": time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        "cmdline": list(sys.argv),
        "engine": plan["engine"],
        "plan": plan,
        "facts": cap.facts.to_json() if cap is not None else {},
        "families": list(cap.families) if cap is not None else [],
        "filters": {"netns": filters.netns, "pid": filters.pid, "port": filters.port,
                    "cgroup": filters.cgroup, "container": filters.container},
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "sysctls": dataclasses.asdict(procfs.tcp_limits(filters.netns or None)),
        "layout": {
            "record_size": ev.EVENT_SIZE,
            "fields": [[name, code, off] for (name, code), off in
                       zip(ev.LAYOUT, ev.layout_offsets().values())],
            "families": ev.FAMILIES, "methods": ev.METHODS,
            "counters": {str(k): v for k, v in ev.COUNTER_NAMES.items()},
        },
        "serve": True,
    }
    try:
        with open("/proc/meminfo") as f:
            h["mem_total_kb"] = int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    return h


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
