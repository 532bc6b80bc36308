"""How far the global TCP memory figure (sockstat `mem`, memory_allocated) can
be from what TCP really holds.

From 6.0 (per_cpu_fw_alloc) sk_memory_allocated_add/sub keep a per-CPU residue
and fold it into the global atomic only once it reaches the reserve in either
direction: SK_MEMORY_PCPU_RESERVE = 1 MiB in pages on 6.0-6.8, the sysctl
net.core.mem_pcpu_rsv from 6.9 (its minimum is that same 1 MiB). So each
possible CPU holds less than `rsv` pages, positive or negative, and the real
total is the global figure plus or minus cpus x rsv pages. Before 6.0 the
global figure is exact. The kernel's own tests compare the global figure, so a
verdict recomputed from it is exact; the margin matters for how much memory
TCP used.
"""
from __future__ import annotations

import os
from typing import Optional

RSV_SYSCTL = "/proc/sys/net/core/mem_pcpu_rsv"
POSSIBLE_CPUS = "/sys/devices/system/cpu/possible"


def _version(release: str) -> tuple:
    parts = []
    for p in release.split("-")[0].split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (2 - len(parts)))


def possible_cpus(path: str = POSSIBLE_CPUS) -> Optional[int]:
    """The number of possible CPUs ("0-3,8-11" ranges), None if unreadable."""
    try:
        with open(path) as f:
            spec = f.read().strip()
        n = 0
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
        return n
    except (OSError, ValueError):
        return None


def margin(release: Optional[str] = None, page_size: Optional[int] = None,
           cpus: Optional[int] = None, rsv_path: str = RSV_SYSCTL) -> Optional[dict]:
    """{"cpus", "rsv_pages", "pages", "source"} for a 6.0+ kernel, None where
    the global figure is exact (before 6.0) or the CPUs cannot be counted."""
    release = release or os.uname().release
    page_size = page_size or os.sysconf("SC_PAGE_SIZE")
    v = _version(release)
    if v < (6, 0):
        return None
    cpus = cpus if cpus is not None else possible_cpus()
    if not cpus:
        return None
    rsv, source = (1 << 20) // page_size, "SK_MEMORY_PCPU_RESERVE (1 MiB a CPU, 6.0-6.8)"
    if v >= (6, 9):
        source = "net.core.mem_pcpu_rsv (1 MiB a CPU by default)"
        try:
            with open(rsv_path) as f:
                rsv = int(f.read().split()[0])
            source = f"net.core.mem_pcpu_rsv = {rsv}"
        except (OSError, ValueError, IndexError):
            pass
    return {"cpus": cpus, "rsv_pages": rsv, "pages": cpus * rsv, "source": source}

