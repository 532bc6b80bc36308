"""Figures for people."""
from __future__ import annotations


def size(n_bytes: float) -> str:
    """Bytes for people: 512 B, 64 KiB, 2.2 GiB."""
    n = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
