"""The SVG charts of the HTML report, drawn on the server so the page is
complete without its script: per-second series folded to MAX_POINTS buckets
(keeping each bucket's maximum: a one-second spike must survive), bar and line
charts with limit lines and time ticks, half-circle gauges and share bars."""
from __future__ import annotations

import datetime
import math
from typing import Any, List, Optional, Sequence, Tuple

from .text import MAX_POINTS, _UTC, _e, _is_num, _short


def downsample(values: Sequence, limit: int = MAX_POINTS) -> Tuple[int, List[Optional[float]]]:
    """(seconds per bucket, bucket maxima): at most `limit` buckets, each the largest
    number of its seconds (None where there was none), so a short spike stays visible
    at any trace length. Buckets are whole seconds, so hover times stay exact."""
    vals = [v if _is_num(v) else None for v in values]
    n = len(vals)
    if n <= limit:
        return 1, vals
    step = -(-n // limit)
    out: List[Optional[float]] = []
    for i in range(0, n, step):
        chunk = [v for v in vals[i:i + step] if v is not None]
        out.append(max(chunk) if chunk else None)
    return step, out


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * exp:
            return m * exp
    return 10 * exp


def _y_ticks(top: float, integer: bool) -> List[float]:
    step = _nice_step(top / 4)
    if integer:
        step = max(1, math.ceil(step))
    n = max(1, math.ceil(top / step - 1e-9))
    return [i * step for i in range(n + 1)]


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)


def _time_ticks(t0: Optional[float], span: float, max_ticks: int = 7) -> List[Tuple[float, str]]:
    """(offset in seconds, label) at round wall-clock times."""
    if span <= 0:
        return []
    step = next((s for s in _TIME_STEPS if span / s <= max_ticks), None)
    if step is None:
        step = 86400 * math.ceil(span / 86400 / max_ticks)
    out = []
    if t0 is None:      # no wall clock: offsets from the start
        k = 0
        while k <= span:
            out.append((k, f"+{_dur(k)}"))
            k += step
        return out
    t = math.ceil(t0 / step) * step
    fmt = "%H:%M:%S" if step < 60 else ("%H:%M" if step < 86400 else "%m-%d")
    while t - t0 <= span + 1e-9:
        out.append((t - t0, datetime.datetime.fromtimestamp(t, _UTC).strftime(fmt)))
        t += step
    return out


def _dur(s: float) -> str:
    s = int(s)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class _Page:
    """Collects the data the hover script reads, one entry per chart."""

    def __init__(self) -> None:
        self.charts: List[dict] = []

    # chart geometry, in viewBox units (the SVG scales to its column)
    W, H = 560, 200
    PX0, PX1, PY0, PY1 = 56, 544, 26, 164

    def chart(self, title: str, series: List[Tuple[str, Sequence]], span: int, t0: Optional[float],
              kind: str, colour: str, unit: str, refs: Sequence[Tuple[Any, str]] = (),
              integer: bool = True, key: str = "") -> Tuple[str, List[str]]:
        """An SVG bar or line chart of per-second series over [0, span) seconds from t0.

        refs are horizontal limit lines (value, label); those far above the data would
        flatten it, so they are returned as notes for the caption instead of drawn.
        Returns (svg, caption notes)."""
        folded = []
        step = 1
        for name, vals in series:
            step, pts = downsample(vals)
            folded.append((name, pts))
        n = max((len(p) for _, p in folded), default=0)
        data_max = max((v for _, p in folded for v in p if v is not None), default=0)
        shown, notes = [], []
        for value, label in refs:
            if not _is_num(value):
                continue
            if value <= max(data_max, 1) * 4:
                shown.append((value, label))
            else:
                notes.append(f"{label} {_short(value)} is off the scale")
        top = max([data_max, 1] + [v for v, _ in shown])
        ticks = _y_ticks(top, integer)
        top = ticks[-1] or 1
        px0, px1, py0, py1 = self.PX0, self.PX1, self.PY0, self.PY1
        pw, ph = px1 - px0, py1 - py0
        span = max(span, 1)

        def x(sec: float) -> float:
            return px0 + sec / span * pw

        def y(v: float) -> float:
            return py1 - v / top * ph

        idx = len(self.charts)
        self.charts.append({"step": step, "n": n, "span": span, "t0": None if t0 is None else round(t0 * 1000),
                            "px0": px0, "pw": pw, "unit": unit,
                            "series": [{"name": name, "v": pts} for name, pts in folded]})
        out = [f'<svg class="chart" data-chart="{idx}" data-series="{_e(key)}" viewBox="0 0 {self.W} {self.H}" '
               f'role="img" preserveAspectRatio="xMidYMid meet"><title>{_e(title)}</title>',
               f'<text class="unit" x="{px0 - 6}" y="{py0 - 10}" text-anchor="start">{_e(unit)}</text>']
        for t in ticks:
            out.append(f'<line class="grid" x1="{px0}" x2="{px1}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
                       f'<text class="tick" x="{px0 - 5}" y="{y(t) + 3.5:.1f}" text-anchor="end">'
                       f'{_e(_short(t))}</text>')
        for off, label in _time_ticks(t0, span):
            out.append(f'<line class="xtick" x1="{x(off):.1f}" x2="{x(off):.1f}" y1="{py1}" y2="{py1 + 4}"/>'
                       f'<text class="tick" x="{x(off):.1f}" y="{py1 + 16}" text-anchor="middle">{_e(label)}</text>')
        day = "" if t0 is None else datetime.datetime.fromtimestamp(t0, _UTC).strftime(", from %Y-%m-%d")
        out.append(f'<text class="axis" x="{(px0 + px1) / 2}" y="{self.H - 6}" text-anchor="middle">'
                   f'{f"time (UTC{day})" if t0 is not None else "time from the start"}'
                   f'{"" if step == 1 else f", each point the max of {step} s"}</text>')
        bw = step / span * pw
        for name, pts in folded:
            if kind == "bar":
                # one path for all bars: a rect element per second would be 10x the bytes
                gap = bw * 0.15 if bw > 3 else 0
                d = []
                for i, v in enumerate(pts):
                    if v:
                        x0 = x(i * step) + gap / 2
                        d.append(f"M{x0:.1f} {py1}V{y(v):.1f}h{max(bw - gap, 0.6):.1f}V{py1}z")
                out.append(f'<path class="bars" fill="{colour}" d="{"".join(d)}"/>')
            else:
                d, pen = [], "M"
                for i, v in enumerate(pts):
                    if v is None:
                        pen = "M"           # a gap where no snapshot was taken
                        continue
                    d.append(f"{pen}{x((i + 0.5) * step):.1f} {y(v):.1f}")
                    pen = "L"
                out.append(f'<path class="line" stroke="{colour}" d="{"".join(d)}"/>')
                if len(pts) <= 90:          # few points: mark each sample
                    out.append(f'<g fill="{colour}">' + "".join(
                        f'<circle cx="{x((i + 0.5) * step):.1f}" cy="{y(v):.1f}" r="2.2"/>'
                        for i, v in enumerate(pts) if v is not None) + "</g>")
        for value, label in shown:
            out.append(f'<line class="ref" x1="{px0}" x2="{px1}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
                       f'<text class="reflabel" x="{px1 - 2}" y="{y(value) - 4:.1f}" text-anchor="end">'
                       f'{_e(label)} {_e(_short(value))}</text>')
        out.append(f'<line class="axisline" x1="{px0}" x2="{px1}" y1="{py1}" y2="{py1}"/>'
                   f'<line class="axisline" x1="{px0}" x2="{px0}" y1="{py0}" y2="{py1}"/>')
        out.append(f'<line class="cursor" x1="0" x2="0" y1="{py0}" y2="{py1}" visibility="hidden"/></svg>')
        return "".join(out), notes


def _gauge(value: Any, limit: Any, marks: Sequence[Tuple[float, str]] = (),
           ratio: Optional[float] = None) -> str:
    """A half-circle gauge of value against limit (full and red at or past the limit);
    `ratio` when the model already computed it."""
    cx, cy, r = 100, 100, 76
    if ratio is None and _is_num(value) and _is_num(limit):
        ratio = value / limit if limit > 0 else (math.inf if value > 0 else 0.0)
    if ratio is None or not ratio >= 0:      # no figure, or a limit the kernel side could not read (-1)
        frac, colour, big, word = 0.0, "#9aa4ae", "n/a", "no figure"
    else:
        frac = min(ratio, 1.0)
        if ratio >= 1:
            colour, word = "#c62828", "AT / OVER LIMIT"
        elif ratio >= 0.75:
            colour, word = "#d97706", "near the limit"
        else:
            colour, word = "#2e7d32", "below the limit"
        if ratio == math.inf:
            big = "over"
        elif ratio >= 10:
            big = f"{ratio:,.0f}×"
        else:
            pct = ratio * 100
            big = f"{pct:.1f}%" if pct < 10 else f"{pct:.0f}%"

    def point(f: float, rad: float) -> Tuple[float, float]:
        a = math.pi * (1 - f)
        return cx + rad * math.cos(a), cy - rad * math.sin(a)

    ex, ey = point(frac, r)
    out = [f'<svg class="gauge" viewBox="0 0 200 122" role="img"><title>{_e(big)} of the limit</title>',
           f'<path class="track" d="M{cx - r} {cy}A{r} {r} 0 0 1 {cx + r} {cy}"/>']
    if frac > 0:
        out.append(f'<path class="fill" stroke="{colour}" d="M{cx - r} {cy}A{r} {r} 0 0 1 {ex:.2f} {ey:.2f}"/>')
    for f, label in marks:
        if 0 < f < 1:
            x1, y1 = point(f, r - 12)
            x2, y2 = point(f, r + 12)
            out.append(f'<line class="mark" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}">'
                       f'<title>{_e(label)}</title></line>')
    out.append(f'<text class="big" x="{cx}" y="{cy - 14}" text-anchor="middle">{_e(big)}</text>'
               f'<text class="word" x="{cx}" y="{cy + 16}" text-anchor="middle">{_e(word)}</text></svg>')
    return "".join(out)


def _bar(frac: float) -> str:
    """A share bar inside a table cell (SVG, so it prints)."""
    w = max(0.0, min(frac, 1.0)) * 100
    return (f'<svg class="share" viewBox="0 0 100 8" preserveAspectRatio="none"><rect class="sharebg" width="100" '
            f'height="8"/><rect width="{w:.1f}" height="8"/></svg>')
