"""Figures for people."""
from __future__ import annotations

from typing import Optional


def size(n_bytes: float) -> str:
    """Bytes for people: 512 B, 64 KiB, 2.2 GiB."""
    n = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def margin_text(m: Optional[dict], page: int) -> str:
    """The per-CPU margin of the global TCP memory figure (6.0+; read by
    tracer/host/pcpu_margin.py), in one line for doctor and reports."""
    if not m:
        return "exact (no per-CPU reserve before 6.0)"
    return (f"± {m['pages']} pages ({size(m['pages'] * page)}): {m['cpus']} CPUs x {m['rsv_pages']} "
            f"pages each may sit in per-CPU reserves, outside the global figure ({m['source']})")
