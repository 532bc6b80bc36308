"""A series as one line of block characters (the dashboard's rates, the text reports' peaks)."""
from __future__ import annotations

from typing import List

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: List, width: int = 60) -> str:
    vals = [v or 0 for v in values]
    if not vals:
        return ""
    if len(vals) > width:            # fold into `width` buckets, keeping each bucket's max
        step = len(vals) / width
        vals = [max(vals[int(i * step):max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)]
    top = max(vals)
    if top <= 0:
        return SPARK[0] * len(vals)
    return "".join(SPARK[min(len(SPARK) - 1, int(v * (len(SPARK) - 1) / top + 0.999))] if v else " "
                   for v in vals)
