"""The header of a trace file: the host, the kernel, the clocks, the probe plan,
the sysctls and the record layout, as they were when the capture started
(`record`, `live --record`)."""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Optional

from tracer import __version__
from tracer.host import pcpu_margin, procfs
from tracer.model import events as ev
from tracer.model.events import EVENT_SIZE
from .capture import Capture


def header(cap: Optional[Capture], argv, filters=None) -> dict:
    """The trace header (docs/trace-format.md). Without a capture (serve's
    /proc-only mode) the plan says engine none and `filters` are the ones asked."""
    filters = cap.filters if cap is not None else filters
    plan = cap.plan.to_json() if cap is not None else {
        "kernel": os.uname().release, "engine": "none", "notes": ["BPF not loaded: /proc only"],
        "config": {}, "families": {}}
    return {
        "format": "tcpoom-trace",
        "tcpoom_version": __version__,
        "hostname": socket.gethostname(),
        "kernel": os.uname().release,
        "machine": os.uname().machine,
        # the pair that turns the events' CLOCK_MONOTONIC nanoseconds into wall time
        "clock": {"monotonic_ns": time.monotonic_ns(), "realtime_ns": time.time_ns()},
        "boot_time_ns": time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        "cmdline": list(argv),
        "engine": cap.plan.engine if cap is not None else "none",
        "plan": plan,
        "facts": cap.facts.to_json() if cap is not None else {},
        "families": list(cap.families) if cap is not None else [],
        "filters": {"netns": filters.netns, "pid": filters.pid, "port": filters.port,
                    "cgroup": filters.cgroup, "container": filters.container},
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "mem_total_kb": procfs.mem_total() // 1024,
        # 6.0+: how far sockstat mem and memory_allocated can be from the truth
        "pcpu_margin": pcpu_margin.margin(),
        "sysctls": dataclasses.asdict(procfs.tcp_limits(filters.netns or None)),
        "layout": {
            "record_size": EVENT_SIZE,
            "fields": [[name, code, off] for (name, code), off in
                       zip(ev.LAYOUT, ev.layout_offsets().values())],
            "families": ev.FAMILIES, "methods": ev.METHODS,
            "counters": {str(k): v for k, v in ev.COUNTER_NAMES.items()},
        },
    }
