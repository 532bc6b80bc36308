"""The header of a trace file: the host, the kernel, the clocks, the probe plan,
the sysctls and the record layout, as they were when the capture started
(`record`, `live --record`)."""
from __future__ import annotations

import dataclasses
import os
import socket
import time

from tracer import __version__
from tracer.host import pcpu_margin, procfs
from tracer.model import events as ev
from tracer.model.events import EVENT_SIZE
from .capture import Capture


def header(cap: Capture, argv) -> dict:
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
        "engine": cap.plan.engine,
        "plan": cap.plan.to_json(),
        "facts": cap.facts.to_json(),
        "families": cap.families,
        "filters": {"netns": cap.filters.netns, "pid": cap.filters.pid, "port": cap.filters.port,
                    "cgroup": cap.filters.cgroup, "container": cap.filters.container},
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "mem_total_kb": procfs.mem_total() // 1024,
        # 6.0+: how far sockstat mem and memory_allocated can be from the truth
        "pcpu_margin": pcpu_margin.margin(),
        "sysctls": dataclasses.asdict(procfs.tcp_limits(cap.filters.netns or None)),
        "layout": {
            "record_size": EVENT_SIZE,
            "fields": [[name, code, off] for (name, code), off in
                       zip(ev.LAYOUT, ev.layout_offsets().values())],
            "families": ev.FAMILIES, "methods": ev.METHODS,
            "counters": {str(k): v for k, v in ev.COUNTER_NAMES.items()},
        },
    }
