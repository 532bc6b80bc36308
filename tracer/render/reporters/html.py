"""`--format html`: one self-contained page with charts, for a browser or a printer.

Everything is inline (CSS, SVG, one small script) so the page works offline, from a
ticket attachment or a laptop with no network: no URL in it points anywhere.

Safety (docs/design.md "Safety"): every string of the model came from the kernel or the
traced host (comm names, hostnames, file paths, peers, the findings built from them),
so every one goes through `_e()` (html.escape) before it reaches the page, in text,
in attributes and inside SVG <title>/<text>. The only <script> data is JSON with
`<`, `>` and `&` written as \\u003c escapes, and the script writes with textContent,
never innerHTML. Charts are drawn here as SVG, so the page is complete without the
script; the script only adds a hover read-out.

Size: the model's series are one point per second of recording, so a day-long trace
has 86,400 of them. Each series is folded to at most MAX_POINTS buckets keeping each
bucket's maximum (a one-second spike must survive), and every table is capped.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import html
import json
import math
from typing import Any, Iterable, List, Optional, Sequence, Tuple

MAX_POINTS = 600        # per series: a 600-px-wide chart cannot show more
MAX_ROWS = 20           # per table
MAX_ITEMS = 30          # per list inside a finding, per chart group
MAX_CHARS = 2000        # per free-text string (a path or a finding), so no one value can bloat the page

_UTC = datetime.timezone.utc
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2, "ok": 3}
# family colours are picked from a fixed table, never from the model
_FAMILY_COLOUR = {"oom_check": "#c62828", "tw_overflow": "#6a3fb5", "mem_exceed": "#d9480f",
                  "pressure": "#1565c0"}
_PROC_SERIES = (
    # key, title, unit
    ("mem", "TCP memory (sockstat mem)", "pages"),
    ("orphan", "Orphaned sockets", "sockets"),
    ("tw", "TIME_WAIT sockets", "sockets"),
    ("inuse", "TCP sockets in use", "sockets"),
)
_FAMILY_TITLE = {"oom_check": "oom_check: orphan / memory kills (tcp_check_oom)",
                 "tw_overflow": "tw_overflow: TIME_WAIT bucket table full",
                 "mem_exceed": "mem_exceed: allocations refused at tcp_mem[2]",
                 "pressure": "pressure: enter / leave memory pressure"}


# ----------------------------------------------------------------------------- text helpers

def _e(value: Any) -> str:
    """Escaped text for HTML text and double-quoted attributes (SVG included)."""
    if value is None:
        return ""
    s = value if isinstance(value, str) else str(value)
    if len(s) > MAX_CHARS:
        s = s[:MAX_CHARS] + "…"
    return html.escape(s, quote=True)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v: Any, digits: int = 1) -> str:
    """A number with thousands separators; anything else escaped as it is."""
    if isinstance(v, bool) or v is None:
        return _e(v) if v is not None else "—"
    if isinstance(v, int):
        return f"{v:,}"
    if _is_num(v):
        return f"{v:,.0f}" if v == int(v) else f"{v:,.{digits}f}"
    return _e(v)


def _size(n: Any) -> str:
    if not _is_num(n):
        return _e(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""


def _short(v: float) -> str:
    """Axis labels: 1.5k, 2M."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.2f}".rstrip("0").rstrip(".") + suffix
    return f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))


def _parse_time(iso: Any) -> Optional[float]:
    """Epoch seconds of an ISO time of the model, None if it is not one."""
    if not isinstance(iso, str):
        return None
    try:
        dt = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    return dt.timestamp()


def _clock(iso: Any, date: bool = False) -> str:
    """'23:24:30.253' (UTC) from a model time, escaped; the raw value if it does not parse."""
    t = _parse_time(iso)
    if t is None:
        return _e(iso) if iso else "—"
    dt = datetime.datetime.fromtimestamp(t, _UTC)
    text = dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"
    return (dt.strftime("%Y-%m-%d ") + text) if date else text


def _get(d: Any, *path: Any, default: Any = None) -> Any:
    """d[path[0]][path[1]]... tolerating a model with parts missing or of the wrong type."""
    for p in path:
        if isinstance(d, dict):
            d = d.get(p)
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return default
        if d is None:
            return default
    return d


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _capped(items: Sequence, n: int) -> Tuple[Sequence, int]:
    items = list(items) if not isinstance(items, list) else items
    return items[:n], max(len(items) - n, 0)


def _more(n: int, what: str = "rows") -> str:
    return f'<p class="more">… {n:,} more {what} not shown</p>' if n else ""


def _script_json(obj: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' can close the element or open a comment."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _host_label(m: dict) -> str:
    return str(_get(m, "source", "hostname") or _get(m, "source", "files", 0) or "?")


def _sev(f: dict) -> str:
    """The severity as a CSS class: only from a fixed set, whatever the model says."""
    s = f.get("severity")
    return s if isinstance(s, str) and s in _SEVERITY_RANK else "info"


def _rank(f: dict) -> int:
    return _SEVERITY_RANK[_sev(f)]


# ----------------------------------------------------------------------------- series

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


# ----------------------------------------------------------------------------- the page

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


# ----------------------------------------------------------------------------- sections

def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (),
           cls: str = "") -> str:
    """Cells are HTML already escaped by the caller; head cells are our own words."""
    h = "".join(f'<th class="n">{c}</th>' if i in numeric else f"<th>{c}</th>" for i, c in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                     for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _bar(frac: float) -> str:
    """A share bar inside a table cell (SVG, so it prints)."""
    w = max(0.0, min(frac, 1.0)) * 100
    return (f'<svg class="share" viewBox="0 0 100 8" preserveAspectRatio="none"><rect class="sharebg" width="100" '
            f'height="8"/><rect width="{w:.1f}" height="8"/></svg>')


def _header(m: dict, hid: str) -> str:
    src, span = _dict(m.get("source")), _dict(m.get("span"))
    files, more = _capped(_list(src.get("files")), 10)
    out = [f'<section class="host" id="{hid}">',
           f'<h2>{_e(_host_label(m))}</h2>',
           '<p class="meta">'
           f'kernel <b>{_e(src.get("kernel"))}</b> · engine {_e(src.get("engine"))} · '
           f'{_clock(span.get("start"), date=True)} → {_clock(span.get("end"))} UTC '
           f'({_num(span.get("seconds"))} s) · files: '
           + ", ".join(f"<code>{_e(f)}</code>" for f in files)
           + (f" and {more} more" if more else "") + "</p>"]
    damage = _list(src.get("damage"))
    if damage:
        shown, more = _capped(damage, 10)
        out.append('<div class="banner bad"><b>Damaged recording:</b> ' + "; ".join(_e(d) for d in shown)
                   + (f" and {more} more" if more else "")
                   + ". Reported up to the last complete block.</div>")
    elif src.get("complete") is False:
        out.append('<div class="banner">The recording has no trailer (still being written, or stopped '
                   'abruptly): the in-kernel totals are missing.</div>')
    return "".join(out)


def _gauges(m: dict) -> str:
    lim, peaks, during = _dict(m.get("limits")), _dict(m.get("peaks")), _dict(m.get("limits_during_events"))
    page = lim.get("page_size") if _is_num(lim.get("page_size")) else 4096
    tm = _list(lim.get("tcp_mem"))
    tm = tm + [None] * (3 - len(tm))
    cards = []

    # TCP memory: pct_of_high is the peak against the hard limit in force at that
    # moment (a limit lowered for a moment is what refused the allocations); memory_over
    # is the worst moment against its own limit, which can be further over than the peak
    pm, mo = _dict(peaks.get("memory_pages")), _dict(peaks.get("memory_over"))
    v = pm.get("value")
    at_peak = pm.get("tcp_mem2")
    lowered = _is_num(at_peak) and at_peak > 0 and at_peak != tm[2]
    high = at_peak if lowered else tm[2]
    pcts = [x for x in (pm.get("pct_of_high"), mo.get("value")) if _is_num(x)]
    ratio = max(pcts) / 100 if pcts else None
    notes = []
    if _is_num(v):
        notes.append(f"peak <b>{_num(v)}</b> pages ({_size(v * page)}) at {_clock(pm.get('at'))}")
    notes.append(f"tcp_mem[2] {_num(high)} pages" + (f" ({_size(high * page)})" if _is_num(high) else "")
                 + (" in force at the peak" if lowered else ""))
    if lowered and _is_num(tm[2]):
        notes.append(f"<b>{_num(tm[2])} pages at the start{_moved(high, tm[2])}</b>")
    if _is_num(mo.get("value")) and _is_num(pm.get("pct_of_high")) and mo["value"] > pm["pct_of_high"]:
        notes.append(f"worst against the limit then in force: {_num(mo.get('pages'))} / "
                     f"{_num(mo.get('tcp_mem2'))} pages ({_num(mo.get('value'))}%) at {_clock(mo.get('at'))}")
    marks = []
    if _is_num(tm[1]) and _is_num(high) and high > 0 and not lowered:
        marks.append((tm[1] / high, f"tcp_mem[1] pressure threshold {tm[1]} pages"))
    cards.append(("TCP memory vs tcp_mem[2]", _gauge(v, high, marks, ratio), notes))

    # orphans: the kernel compares orphans << shift with tcp_max_orphans
    po, ps = _dict(peaks.get("orphans")), _dict(peaks.get("orphans_shifted"))
    counted = max([x for x in (po.get("value"), ps.get("value")) if _is_num(x)], default=None)
    limits = [x for x in (ps.get("max_orphans"), during.get("tcp_max_orphans")) if _is_num(x)]
    limit = min(limits) if limits else lim.get("tcp_max_orphans")
    notes = []
    if _is_num(po.get("value")):
        notes.append(f"peak <b>{_num(po.get('value'))}</b> orphans ({_e(po.get('source', 'exact'))}) "
                     f"at {_clock(po.get('at'))}")
    if ps and _is_num(ps.get("value")):
        notes.append(f"counted with the penalty: {_num(ps.get('orphans'))} &lt;&lt; {_num(ps.get('shift'))} "
                     f"= {_num(ps.get('value'))}")
    notes.append(f"tcp_max_orphans {_num(limit)}" + (" when the sockets were killed" if limits else ""))
    if limits and _is_num(lim.get("tcp_max_orphans")) and lim["tcp_max_orphans"] != limit:
        notes.append(f"<b>{_num(lim['tcp_max_orphans'])} at the start{_moved(limit, lim['tcp_max_orphans'])}</b>")
    cards.append(("Orphans vs tcp_max_orphans", _gauge(counted, limit), notes))

    # TIME_WAIT: the count read at the overflows, against that namespace's limit
    tw = _dict(peaks.get("tw"))
    limit = tw.get("limit") if _is_num(tw.get("limit")) else lim.get("tcp_max_tw_buckets")
    notes = []
    if _is_num(tw.get("value")):
        notes.append(f"peak <b>{_num(tw.get('value'))}</b> TIME_WAIT sockets at {_clock(tw.get('at'))}"
                     + (f", netns {_e(tw.get('netns'))}" if tw.get("netns") is not None else ""))
    notes.append(f"tcp_max_tw_buckets {_num(limit)}"
                 + (" in that namespace" if tw.get("limit") is not None else ""))
    if tw.get("limit") is not None and lim.get("tcp_max_tw_buckets") not in (None, limit):
        start = lim.get("tcp_max_tw_buckets")
        notes.append(f"<b>{_num(start)} at the start{_moved(limit, start)}</b>")
    cards.append(("TIME_WAIT vs tcp_max_tw_buckets", _gauge(tw.get("value"), limit), notes))

    return '<div class="gauges">' + "".join(
        f'<figure class="gcard"><figcaption>{title}</figcaption>{svg}<ul class="gnotes">'
        + "".join(f"<li>{n}</li>" for n in notes) + "</ul></figure>"
        for title, svg, notes in cards) + "</div>"


def _moved(then: Any, start: Any) -> str:
    """': it was lowered' when the limit in force at the events was below the start value."""
    return ": it was lowered" if _is_num(then) and _is_num(start) and then < start else ""


def _findings(m: dict) -> str:
    fs = [f for f in _list(m.get("diagnosis")) if isinstance(f, dict)]
    fs.sort(key=_rank)   # the worst first; stable
    fs, more = _capped(fs, MAX_ITEMS)
    out = ["<h3>Diagnosis</h3>"]
    for f in fs:
        sev = _sev(f)
        out.append(f'<div class="finding {sev}"><div class="ftitle"><span class="badge">{_e(f.get("severity"))}</span> '
                   f'{_e(f.get("title"))}</div>')
        for label, key in (("Evidence", "evidence"), ("What to do", "advice")):
            items, n = _capped(_list(f.get(key)), MAX_ITEMS)
            if items:
                out.append(f'<div class="flabel">{label}</div><ul class="{key}">'
                           + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>" + _more(n, "items"))
        if f.get("why"):
            out.append(f'<p class="why"><b>Why:</b> {_e(f.get("why"))}</p>')
        out.append("</div>")
    out.append(_more(more, "findings"))
    snippet = m.get("sysctl_snippet")
    if snippet:
        out.append('<h3>Suggested sysctl settings</h3><pre class="snippet">' + _e(str(snippet).rstrip()) + "</pre>"
                   '<p class="hint">tcp_mem is in pages of ' + _num(_get(m, "limits", "page_size", default=4096))
                   + " bytes, not bytes. Read the advice above first: a slow consumer is fixed in the "
                   "application, not with a bigger limit.</p>")
    return "".join(out)


def _timeline(page: _Page, m: dict) -> str:
    ser = _dict(m.get("series"))
    t0 = _parse_time(ser.get("t0"))
    fams = _dict(ser.get("events"))
    proc = _dict(ser.get("proc"))
    span = max([len(v) for v in list(fams.values()) + list(proc.values()) if isinstance(v, list)], default=0)
    if not span:
        return "<h3>Timeline</h3><p>No per-second figures in this recording.</p>"
    lim, during = _dict(m.get("limits")), _dict(m.get("limits_during_events"))
    tm = _list(lim.get("tcp_mem")) + [None] * 3
    out = ["<h3>Timeline</h3>", _crossed_strip(m, t0, span)]
    left, right = [], []
    fam_items, fmore = _capped(list(fams.items()), 12)
    for key, vals in fam_items:
        vals = _list(vals)
        nums = [v for v in vals if _is_num(v)]
        total = sum(nums)
        peak = max(nums, default=0)
        colour = _FAMILY_COLOUR.get(key, "#546e7a")
        svg, _ = page.chart(f"{key} events per second", [(str(key), vals)], span, t0, "bar", colour,
                            "events/s", key=str(key))
        when = ""
        if peak and t0 is not None:
            when = " at " + datetime.datetime.fromtimestamp(t0 + vals.index(peak), _UTC).strftime("%H:%M:%S")
        left.append(f'<figure class="chartbox"><figcaption><b>{_e(_FAMILY_TITLE.get(key, key))}</b>'
                    f'<span class="cap">{_num(total)} in all; peak {_num(peak)}/s{when}</span>'
                    f'</figcaption>{svg}</figure>')
    refs_of = {
        "mem": [(tm[1], "tcp_mem[1]"), (tm[2], "tcp_mem[2]")]
        + ([(during.get("tcp_mem_high"), "tcp_mem[2] during events")]
           if during.get("tcp_mem_high") not in (None, tm[2]) else []),
        "orphan": [(lim.get("tcp_max_orphans"), "tcp_max_orphans")]
        + ([(during.get("tcp_max_orphans"), "tcp_max_orphans during events")]
           if during.get("tcp_max_orphans") not in (None, lim.get("tcp_max_orphans")) else []),
        "tw": [(lim.get("tcp_max_tw_buckets"), "tcp_max_tw_buckets")]
        + ([(_get(m, "peaks", "tw", "limit"), "limit at the overflows")]
           if _get(m, "peaks", "tw", "limit") not in (None, lim.get("tcp_max_tw_buckets")) else []),
    }
    known = [k for k, _, _ in _PROC_SERIES]
    for key, title, unit in list(_PROC_SERIES) + [(k, str(k), "") for k in list(proc)[:8] if k not in known]:
        vals = _list(proc.get(key))
        nums = [v for v in vals if _is_num(v)]
        if not nums:
            continue
        svg, notes = page.chart(title, [(str(key), vals)], span, t0, "line", "#37474f", unit,
                                refs_of.get(key, ()), key=f"proc.{key}")
        cap = f"max {_num(max(nums))}"
        if key == "mem":
            page_size = lim.get("page_size") if _is_num(lim.get("page_size")) else 4096
            cap += f" pages ({_size(max(nums) * page_size)})"
        right.append(f'<figure class="chartbox"><figcaption><b>{_e(title)}</b> '
                     f'<span class="cap">from /proc/net/sockstat; {cap}</span></figcaption>{svg}'
                     + (f'<p class="note">{"; ".join(_e(n) for n in notes)}</p>' if notes else "") + "</figure>")
    out.append('<div class="charts"><div><h4>Events per second, by family</h4>'
               + "".join(left) + _more(fmore, "families")
               + '</div><div><h4>Kernel figures, sampled each second</h4>'
               + ("".join(right) or "<p>No /proc snapshots.</p>") + "</div></div>")
    return "".join(out)


def _crossed_strip(m: dict, t0: Optional[float], span: int) -> str:
    """When each limit was crossed, on the same time scale as the charts."""
    crossed = [c for c in _list(m.get("crossed")) if isinstance(c, dict)]
    if not crossed or t0 is None:
        return ""
    crossed, _ = _capped(crossed, 10)
    W, L, R, row = 1100, 230, 1090, 22
    H = 30 + row * len(crossed)
    out = [f'<svg class="strip" viewBox="0 0 {W} {H}" role="img"><title>limits crossed over time</title>']
    for off, label in _time_ticks(t0, span, 12):
        xx = L + off / span * (R - L)
        out.append(f'<line class="grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="4" y2="{H - 18}"/>'
                   f'<text class="tick" x="{xx:.1f}" y="{H - 5}" text-anchor="middle">{_e(label)}</text>')
    for i, c in enumerate(crossed):
        yy = 6 + i * row
        a, b = _parse_time(c.get("first")), _parse_time(c.get("last"))
        out.append(f'<text class="slabel" x="{L - 8}" y="{yy + 13}" text-anchor="end">{_e(c.get("limit"))}</text>')
        if a is None or b is None:
            continue
        xa = L + max(0.0, min(a - t0, span)) / span * (R - L)
        xb = L + max(0.0, min(b - t0, span)) / span * (R - L)
        episodes = c.get("episodes")
        # several episodes: only the first and last seconds are known, so a pale bar
        # (crossed somewhere in there), not a solid one (crossed all along)
        cls = "span1" if episodes == 1 else "spanN"
        tip = (f"{c.get('limit')}: {c.get('episodes')} episode(s), {c.get('seconds')} s in all, "
               f"{c.get('events')} events")
        out.append(f'<rect class="{cls}" x="{xa:.1f}" y="{yy + 2}" width="{max(xb - xa, 2):.1f}" '
                   f'height="{row - 8}"><title>{_e(tip)}</title></rect>')
        label = f"{_num(c.get('seconds'))} s" + (f", {_num(episodes)} episodes" if episodes != 1 else "")
        if xb + 8 + 7 * len(label) < R:
            out.append(f'<text class="tick" x="{xb + 5:.1f}" y="{yy + 13}">{label}</text>')
        elif xa - 8 - 7 * len(label) > L:
            out.append(f'<text class="tick" x="{xa - 5:.1f}" y="{yy + 13}" text-anchor="end">{label}</text>')
    out.append("</svg>")
    return '<figure class="stripbox"><figcaption><b>Limits crossed</b></figcaption>' + "".join(out) + "</figure>"


def _events(m: dict) -> str:
    ev = _dict(m.get("events"))
    comp = _dict(_get(m, "kernel_counters", "comparison"))
    plan = _dict(m.get("plan"))
    rows = []
    items, more = _capped(list(_dict(ev.get("by_family")).items()), MAX_ROWS)
    for fam, n in items:
        verdicts = _dict(_dict(ev.get("by_verdict")).get(fam))
        c = _dict(comp.get(fam))
        p = _dict(plan.get(fam))
        in_kernel = c.get("in_kernel_count")
        delta = c.get("kernel_delta")
        # the exact in-kernel count if the recording has it, else the events the model
        # compares (for pressure only the entries: TCPMemoryPressures counts those)
        ours = in_kernel if _is_num(in_kernel) else c.get("events", n)
        if not c:
            check = '<span class="muted">no kernel counter</span>'
        elif not _is_num(delta):
            check = '<span class="muted">counter not read</span>'
        elif ours == delta:
            check = '<span class="good">✓ agrees</span>'
        else:
            check = f'<span class="bad">✗ differs by {_num(ours - delta) if _is_num(ours) else "?"}</span>'
        lost_detail = ""
        if _is_num(in_kernel) and _is_num(n) and in_kernel > n:
            lost_detail = f' <span class="bad">({_num(in_kernel - n)} without detail)</span>'
        rows.append((f"<b>{_e(fam)}</b>", _num(n) + lost_detail,
                     ", ".join(f"{_e(k)} {_num(v)}" for k, v in list(verdicts.items())[:MAX_ITEMS]),
                     _num(in_kernel) if in_kernel is not None else "—",
                     _e(c.get("kernel_counter")) or "—",
                     _num(delta) if delta is not None else "—", check,
                     f'{_e(p.get("method"))} <code>{_e(p.get("target"))}</code>'))
    out = ["<h3>Events against the kernel's counters</h3>"]
    if rows:
        out += [_table(("family", "events recorded", "verdicts", "counted in kernel", "TcpExt counter",
                        "counter Δ", "check", "attached to"), rows, numeric=(1, 3, 5)), _more(more)]
    else:
        out.append("<p>No events recorded.</p>")
    callers = _dict(ev.get("oom_callers"))
    if callers:
        out.append('<p class="note">oom_check callers: ' + ", ".join(
            f"{_e(k)} {_num(v)}" for k, v in list(callers.items())[:MAX_ITEMS]) + "</p>")
    delta = _dict(_get(m, "kernel_counters", "tcpext_delta"))
    if delta:
        out.append('<p class="note">TcpExt deltas over the recording: ' + ", ".join(
            f"{_e(k)} {_num(v)}" for k, v in list(delta.items())[:MAX_ROWS]) + "</p>")
    loss = _dict(m.get("loss"))
    if loss:
        out.append('<div class="banner bad"><b>Events lost in the ring buffer:</b> '
                   + ", ".join(f"{_e(k)} {_num(v)}" for k, v in list(loss.items())[:MAX_ROWS])
                   + ". Counts above stay exact (in-kernel counters); only per-event detail was lost.</div>")
    else:
        out.append('<p class="good">No event lost: every event\'s detail was recorded.</p>')
    missed = _dict(m.get("missed"))
    if missed:
        out.append('<div class="banner bad"><b>Calls the probes missed</b> (the kernel\'s own counts: '
                   'recursion misses, kprobe missed): '
                   + ", ".join(f"{_e(k)} {_num(v)}" for k, v in list(missed.items())[:MAX_ROWS])
                   + ". These are in neither the counts nor the details.</div>")
    return "".join(out)


def _crossed_peaks_limits(m: dict) -> str:
    lim, during = _dict(m.get("limits")), _dict(m.get("limits_during_events"))
    out = ["<h3>Limits crossed</h3>"]
    crossed, more = _capped([c for c in _list(m.get("crossed")) if isinstance(c, dict)], MAX_ROWS)
    if crossed:
        out.append(_table(("limit", "from (UTC)", "to (UTC)", "seconds in all", "episodes", "events"),
                          [(_e(c.get("limit")), _clock(c.get("first"), date=True), _clock(c.get("last")),
                            _num(c.get("seconds")), _num(c.get("episodes")), _num(c.get("events")))
                           for c in crossed], numeric=(3, 4, 5)) + _more(more))
    else:
        out.append("<p>No limit crossed.</p>")
    out.append('<div class="cols2"><div><h3>Peaks</h3>')
    peaks = _dict(m.get("peaks"))
    rows = []
    names = {"orphans": "orphans", "orphans_shifted": "orphans &lt;&lt; shift",
             "memory_pages": "TCP memory (pages)", "tw": "TIME_WAIT",
             "memory_over": "TCP memory, worst % of the tcp_mem[2] then"}
    for k, p in list(peaks.items())[:MAX_ROWS]:
        p = _dict(p)
        extra = {kk: vv for kk, vv in p.items() if kk not in ("value", "at")}
        rows.append((names.get(k) or _e(k), _num(p.get("value")), _clock(p.get("at")),
                     ", ".join(_context(kk, vv) for kk, vv in list(extra.items())[:10])))
    out.append(_table(("figure", "peak", "at (UTC)", "context"), rows, numeric=(1,)) if rows
               else "<p>No peak figures.</p>")
    out.append("</div><div><h3>Limits</h3>")
    page = lim.get("page_size") if _is_num(lim.get("page_size")) else 4096
    rows = []

    def triple(v: Any, unit_pages: bool) -> str:
        vals = _list(v)
        text = " / ".join(_num(x) for x in vals[:3])
        if unit_pages and len(vals) >= 3 and _is_num(vals[2]):
            text += f" pages <span class=\"muted\">(high {_size(vals[2] * page)})</span>"
        elif vals:
            text += " bytes"
        return text

    low = during.get("tcp_mem_high")
    rows.append(("tcp_mem (low / pressure / high)", triple(lim.get("tcp_mem"), True),
                 _flag(low, _get(lim, "tcp_mem", 2))))
    for key in ("tcp_max_orphans", "tcp_max_tw_buckets"):
        rows.append((key, _num(lim.get(key)), _flag(during.get(key), lim.get(key))))
    rows.append(("tcp_rmem (min / default / max)", triple(lim.get("tcp_rmem"), False), ""))
    rows.append(("tcp_wmem (min / default / max)", triple(lim.get("tcp_wmem"), False), ""))
    rows.append(("page size", _num(page) + " bytes", ""))
    out.append(_table(("sysctl", "at the start", "lowest during events"), rows, cls="limits"))
    out.append("</div></div>")
    return "".join(out)


def _context(key: Any, value: Any) -> str:
    """One 'key value' of a peak's context: sizes readable, identifiers as they are."""
    if key == "bytes":
        return _size(value)
    if key == "pct_of_high":
        return f"{_num(value)}% of tcp_mem[2] in force then"
    if key in ("netns", "pid"):
        return f"{_e(key)} {_e(value)}"
    return f"{_e(key)} {_num(value)}"


def _flag(during: Any, start: Any) -> str:
    if during is None:
        return "—"
    if _is_num(during) and _is_num(start) and during < start:
        return f'<span class="bad"><b>{_num(during)}</b> (lowered)</span>'
    return _num(during)


def _distributions(m: dict) -> str:
    d = _dict(m.get("distributions"))
    parts = []
    for key, title, label in (("shift", "Shift at the oom_check decision", "shift {k}: orphans × {p}"),
                              ("orphans_at_decision", "Orphans at the decision (power-of-two buckets)", "≥ {k}")):
        items, more = _capped(list(_dict(d.get(key)).items()), 40)
        if not items:
            parts.append(f"<div><h4>{title}</h4><p class=\"muted\">none recorded</p></div>")
            continue
        total = sum(v for _, v in items if _is_num(v)) or 1
        rows = []
        for k, v in items:
            if key == "shift":
                try:
                    text = label.format(k=_e(k), p=_num(1 << int(k)) if 0 <= int(k) < 63 else "?")
                except (TypeError, ValueError):
                    text = _e(k)
            else:
                text = label.format(k=_e(k))
            rows.append((text, _num(v), _bar(v / total if _is_num(v) else 0)))
        parts.append(f"<div><h4>{title}</h4>" + _table(("bucket", "decisions", ""), rows, numeric=(1,), cls="dist")
                     + _more(more, "buckets") + "</div>")
    return "<h3>Distributions</h3><div class=\"cols2\">" + "".join(parts) + "</div>"


def _top(m: dict) -> str:
    t = _dict(m.get("top"))

    def block(title: str, key: str, cell) -> str:
        items, more = _capped([i for i in _list(t.get(key)) if isinstance(i, dict)], MAX_ROWS)
        if not items:
            return f"<div><h4>{title}</h4><p class=\"muted\">none</p></div>"
        total = sum(i.get("events") for i in items if _is_num(i.get("events"))) or 1
        rows = [(cell(i), _num(i.get("events")),
                 _bar(i.get("events") / total if _is_num(i.get("events")) else 0)) for i in items]
        return (f"<div><h4>{title}</h4>" + _table(("", "events", ""), rows, numeric=(1,), cls="top")
                + _more(more) + "</div>")

    def proc(i: dict) -> str:
        comm = i.get("comm")
        name = f"<code>{_e(comm)}</code>" if comm else '<span class="muted">(no task)</span>'
        pid = i.get("pid")
        return f"{name} <span class=\"muted nw\">pid {_e(pid)}</span>" + (
            ' <span class="muted">(kernel context: softirq or timer)</span>' if pid == 0 and comm else "")

    return ('<h3>Who: processes, ports, peers, namespaces</h3><p class="hint">The task running when the kernel '
            'decided: for timer and softirq paths this is whoever was on the CPU, not the socket\'s owner '
            '(see the holders for owners).</p><div class="cols4">'
            + block("Processes (comm, pid)", "processes", proc)
            + block("Local ports", "local_ports", lambda i: f'<span class="nw">{_e(i.get("port"))}</span>')
            + block("Remote peers", "remote_peers", lambda i: f"<code>{_e(i.get('peer'))}</code>")
            + block("Network namespaces", "netns", lambda i: f'<span class="nw">{_e(i.get("netns"))}</span>')
            + "</div>")


def _holders(m: dict) -> str:
    h = _dict(m.get("holders"))
    if not h.get("snapshots"):
        return ("<h3>Sockets holding the most memory</h3><p class=\"muted\">No holders snapshot: TCP did not "
                "enter memory pressure while recording.</p>")
    out = [f"<h3>Sockets holding the most memory</h3><p class=\"hint\">{_num(h.get('snapshots'))} snapshot(s) "
           "taken during memory pressure, as <code>ss -tmp</code> shows them. Large receive queues are readers "
           "that stopped reading; large send queues are peers that stopped acknowledging.</p>"]
    procs, more = _capped([p for p in _list(h.get("processes")) if isinstance(p, dict)], MAX_ROWS)
    if procs:
        out.append("<h4>Processes, by the most memory one of their sockets held</h4>" + _table(
            ("process", "pids", "max held"),
            [(f"<code>{_e(p.get('comm'))}</code>", ", ".join(_e(x) for x in _list(p.get("pids"))[:10]),
              _size(p.get("max_bytes"))) for p in procs], numeric=(2,)) + _more(more))
    socks, more = _capped([s for s in _list(h.get("latest")) if isinstance(s, dict)], MAX_ROWS)
    if socks:
        rows = []
        for s in socks:
            pids = _list(s.get("pids"))
            who = (f"<code>{_e(s.get('comm') or '?')}</code> " + ",".join(_e(p) for p in pids[:5])) if pids else \
                f'<span class="muted">{_e(s.get("owner"))}</span>'
            rows.append((_e(s.get("state")), f"<code>{_e(s.get('local'))}</code>",
                         f"<code>{_e(s.get('remote'))}</code>",
                         _size(s.get("rx_queue")), _size(s.get("tx_queue")), _size(s.get("mem")), who,
                         _num(_get(s, "skmem", "drops"))))
        out.append("<h4>Latest snapshot</h4>" + _table(
            ("state", "local", "peer", "Recv-Q", "Send-Q", "memory", "process", "drops"), rows,
            numeric=(3, 4, 5, 7)) + _more(more))
    return "".join(out)


def _fidelity_class(v: Any) -> str:
    """A CSS class from a fixed set, whatever the model says."""
    return v if isinstance(v, str) and v in ("exact", "derived", "sampled") else "unavailable"


def _plan(m: dict) -> str:
    plan = _dict(m.get("plan"))
    if not plan:
        return ""
    rows = []
    for fam, p in list(plan.items())[:MAX_ROWS]:
        p = _dict(p)
        fields = ", ".join(f'{_e(k)} <span class="fid {_fidelity_class(v)}">{_e(v)}</span>'
                           for k, v in list(_dict(p.get("fields")).items())[:MAX_ITEMS])
        rows.append((f"<b>{_e(fam)}</b>", _e(p.get("method")), f"<code>{_e(p.get('target'))}</code>", fields,
                     _e(p.get("blind_spot")) or '<span class="muted">none</span>'))
    return ("<h3>How each family was traced</h3>" + _table(("family", "method", "target", "fields", "blind spot"),
                                                          rows, cls="plan"))


def _host(page: _Page, m: dict, hid: str) -> str:
    return "".join([_header(m, hid), _gauges(m), _findings(m), _timeline(page, m), _events(m),
                    _crossed_peaks_limits(m), _distributions(m), _top(m), _holders(m), _plan(m), "</section>"])


def _memory_cell(m: dict) -> str:
    p = _dict(_get(m, "peaks", "memory_pages"))
    if not p:
        return "—"
    margin = _dict(m.get("memory_margin"))
    return (f"{_num(p.get('value'))} pages, {_num(p.get('pct_of_high'))}% of tcp_mem[2] in force then"
            + (f" (± {_num(margin.get('pages'))} pages in per-CPU reserves)" if margin else ""))


def _summary(models: List[dict]) -> str:
    """Hosts side by side: one column per host."""
    head = "<tr><th></th>" + "".join(f'<th><a href="#host-{i}">{_e(_host_label(m))}</a></th>'
                                     for i, m in enumerate(models)) + "</tr>"

    def row(label: str, cell) -> str:
        return f"<tr><th>{label}</th>" + "".join(f"<td>{cell(m)}</td>" for m in models) + "</tr>"

    def worst(m: dict) -> str:
        fs = sorted([f for f in _list(m.get("diagnosis")) if isinstance(f, dict)],
                    key=_rank)
        if not fs:
            return "—"
        return (f'<span class="sev {_sev(fs[0])}"><span class="badge">{_e(fs[0].get("severity"))}</span> '
                f'{_e(fs[0].get("title"))}</span>')

    def peak(key: str, limit_key: str) -> Any:
        def cell(m: dict) -> str:
            p = _dict(_get(m, "peaks", key))
            if not p:
                return "—"
            lim = p.get("limit", _get(m, "limits", limit_key))
            return f"{_num(p.get('value'))} / {_num(lim)}"
        return cell

    fams: List[str] = []
    for m in models:
        for f in _dict(_get(m, "events", "by_family")):
            if f not in fams:
                fams.append(f)
    rows = [row("kernel", lambda m: _e(_get(m, "source", "kernel"))),
            row("recorded", lambda m: f"{_clock(_get(m, 'span', 'start'), date=True)} UTC, "
                                      f"{_num(_get(m, 'span', 'seconds'))} s"),
            row("file", lambda m: '<span class="bad">damaged</span>' if _get(m, "source", "damage")
                else ("complete" if _get(m, "source", "complete") else "no trailer")),
            row("worst finding", worst)]
    for f in fams[:12]:
        rows.append(row(f"{_e(f)} events", lambda m, f=f: _num(_get(m, "events", "by_family", f, default=0))))
    rows += [row("lost events", lambda m: _num(sum(v for v in _dict(m.get("loss")).values() if _is_num(v)))),
             row("missed calls", lambda m: _num(sum(v for v in _dict(m.get("missed")).values() if _is_num(v)))),
             row("TCP memory peak", _memory_cell),
             row("orphans peak / limit", peak("orphans", "tcp_max_orphans")),
             row("TIME_WAIT peak / limit", peak("tw", "tcp_max_tw_buckets")),
             row("limits crossed", lambda m: "<br>".join(_e(c.get("limit")) for c in _list(m.get("crossed"))[:10]
                                                         if isinstance(c, dict)) or "none")]
    return ('<section class="host"><h2>Hosts side by side</h2><table class="summary">' + head + "".join(rows)
            + "</table></section>")


_CSS = """
:root{--fg:#1c2430;--muted:#5d6975;--line:#d6dce2;--bg:#eef1f4;--crit:#b42318;--warn:#a15c07;
--info:#175cd3;--ok:#067647}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:13.5px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1320px;margin:0 auto;padding:14px 20px 40px}
header.top h1{font-size:21px;margin:6px 0 2px}
header.top p{margin:0;color:var(--muted)}
nav{margin:8px 0}nav a{margin-right:14px}
h2{font-size:19px;margin:0 0 4px}
h3{font-size:15px;margin:22px 0 8px;padding-bottom:3px;border-bottom:1px solid var(--line)}
h4{font-size:13px;margin:10px 0 4px;color:#333}
code,pre{font-family:ui-monospace,"SFMono-Regular","DejaVu Sans Mono",Menlo,monospace;font-size:12.5px}
section.host{background:#fff;border:1px solid var(--line);border-radius:6px;padding:16px 22px;margin:16px 0}
.meta{color:var(--muted);margin:0 0 10px}
.banner{border:1px solid #d9a400;background:#fff8db;padding:6px 10px;margin:8px 0}
.banner.bad{border-color:var(--crit);background:#fdecea}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:4px 0}
th,td{padding:3px 8px;border-bottom:1px solid #e5e9ed;text-align:left;vertical-align:top}
thead th{border-bottom:1.5px solid #9aa4ae;font-weight:600;font-size:12.5px}
.n{text-align:right;white-space:nowrap}
table.summary th{white-space:nowrap}table.summary td{min-width:180px}
.muted{color:var(--muted)}.good{color:var(--ok)}.bad{color:var(--crit)}
.hint,.note{color:var(--muted);font-size:12.5px;margin:4px 0}
.more{color:var(--muted);font-style:italic;margin:2px 0}
.gauges{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:14px;margin:10px 0}
.gcard{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px 12px;break-inside:avoid}
.gcard figcaption{font-weight:600}
.gauge{display:block;width:210px;max-width:100%;margin:2px auto 0}
.gauge .track{fill:none;stroke:#e3e7eb;stroke-width:16}
.gauge .fill{fill:none;stroke-width:16}
.gauge .mark{stroke:#1c2430;stroke-width:2}
.gauge .big{font-size:26px;font-weight:700;fill:var(--fg)}
.gauge .word{font-size:11px;fill:var(--muted);letter-spacing:.04em}
.gnotes{margin:0;padding-left:16px;font-size:12.5px}
.finding{border:1px solid var(--line);border-left:6px solid var(--sevc);border-radius:4px;padding:8px 12px;
margin:8px 0;break-inside:avoid}
.critical{--sevc:var(--crit)}.warning{--sevc:var(--warn)}.info{--sevc:var(--info)}.ok{--sevc:var(--ok)}
.badge{display:inline-block;font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.05em;
padding:0 6px;border:1.5px solid var(--sevc);color:var(--sevc);border-radius:3px;margin-right:4px;
vertical-align:1px}
.ftitle{font-weight:650;font-size:14px}
.flabel{font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin-top:6px}
.finding ul{margin:2px 0;padding-left:20px}
.finding ul.advice li::marker{content:"→ "}
.why{margin:6px 0 0;color:#374151}
pre.snippet{background:#f3f6f9;border:1px solid var(--line);border-left:4px solid var(--ok);padding:8px 12px;
white-space:pre-wrap;margin:4px 0}
.charts{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:0 22px}
.chartbox{margin:0 0 8px;break-inside:avoid}
.chartbox figcaption{font-size:12.5px}.cap{color:var(--muted);margin-left:6px}
svg.chart{display:block;width:100%;height:auto}
svg text{font-size:10.5px;fill:#4b5563}
svg .unit,svg .axis{fill:#6b7280;font-size:10px}
svg .grid{stroke:#eceff2;stroke-width:1}
svg .axisline,svg .xtick{stroke:#6b7280;stroke-width:1}
svg .line{fill:none;stroke-width:1.6;stroke-linejoin:round}
svg .ref{stroke:#b42318;stroke-width:1.2;stroke-dasharray:5 3}
svg .reflabel{fill:#b42318;font-size:10px}
svg .cursor{stroke:#111;stroke-width:1;stroke-dasharray:2 2}
.stripbox{margin:0 0 10px}.stripbox figcaption{font-size:12.5px}
svg.strip{display:block;width:100%;height:auto}
svg .slabel{font-size:11px;fill:#1c2430}
svg .span1{fill:#c62828;fill-opacity:.85}
svg .spanN{fill:#c62828;fill-opacity:.35;stroke:#c62828;stroke-width:1}
.cols2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:0 24px}
.cols4{display:grid;grid-template-columns:minmax(0,1.7fr) minmax(0,1fr) minmax(0,1.3fr) minmax(0,1fr);gap:0 18px}
svg.share{display:inline-block;width:56px;height:8px}
svg.share rect{fill:#64748b}svg.share .sharebg{fill:#eef1f4}
table.top,table.dist{width:100%}table.top td:first-child{overflow-wrap:anywhere}.nw{white-space:nowrap}
.fid{font-size:11px;padding:0 4px;border-radius:3px;border:1px solid #cbd2d9}
.fid.exact{border-color:var(--ok);color:var(--ok)}.fid.sampled{border-color:var(--warn);color:var(--warn)}
.fid.unavailable{border-color:var(--crit);color:var(--crit)}
.tip{position:fixed;z-index:9;background:#111827;color:#f9fafb;padding:5px 8px;border-radius:4px;
font-size:12px;white-space:pre;pointer-events:none}
footer{color:var(--muted);font-size:12px;margin-top:16px}
@media (max-width:1000px){.charts,.cols2{grid-template-columns:1fr}.cols4{grid-template-columns:1fr 1fr}}
@media print{
body{background:#fff;font-size:11.5px}main{max-width:none;padding:0}
section.host{border:none;padding:0;margin:0 0 20px;break-before:page}
nav,.tip,svg .cursor{display:none}
.chartbox,.gcard,.finding,table,figure{break-inside:avoid}
a{color:inherit;text-decoration:none}
}
"""

# The hover read-out. It only reads the JSON block and writes with textContent: the
# series names in it came from the model, and textContent cannot create elements.
_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tcpoom-data").textContent);
  var tip = document.createElement("div");
  tip.className = "tip";
  tip.hidden = true;
  document.body.appendChild(tip);
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function when(c, i) {
    var s = i * c.step;
    if (c.t0 === null) { return "+" + s + " s"; }
    var d = new Date(c.t0 + s * 1000);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
  }
  var hooked = 0;
  Array.prototype.forEach.call(document.querySelectorAll("svg[data-chart]"), function (svg) {
    var c = data.charts[Number(svg.getAttribute("data-chart"))];
    var cursor = svg.querySelector(".cursor");
    if (!c || !cursor) { return; }
    function hide() { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); }
    svg.addEventListener("mousemove", function (ev) {
      var ctm = svg.getScreenCTM();
      if (!ctm) { return; }
      var pt = svg.createSVGPoint();
      pt.x = ev.clientX; pt.y = ev.clientY;
      var p = pt.matrixTransform(ctm.inverse());
      var i = Math.floor((p.x - c.px0) / c.pw * c.span / c.step);
      if (i < 0 || i >= c.n) { hide(); return; }
      var x = c.px0 + (i + 0.5) * c.step / c.span * c.pw;
      cursor.setAttribute("x1", x); cursor.setAttribute("x2", x);
      cursor.setAttribute("visibility", "visible");
      var lines = [when(c, i) + (c.step > 1 ? " (max of " + c.step + " s)" : "")];
      c.series.forEach(function (s) {
        var v = s.v[i];
        lines.push(s.name + ": " + (v === null || v === undefined ? "no sample" : v.toLocaleString("en-US")) +
                   " " + c.unit);
      });
      tip.textContent = lines.join("\\n");
      tip.hidden = false;
      var left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      tip.style.left = Math.max(4, left) + "px";
      tip.style.top = (ev.clientY + 14) + "px";
    });
    svg.addEventListener("mouseleave", hide);
    hooked += 1;
  });
  document.documentElement.setAttribute("data-charts-hooked", String(hooked));
})();
"""

_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()


def render(models: List[dict]) -> str:
    page = _Page()
    labels = [_host_label(m) for m in models]
    body = []
    if len(models) > 1:
        body.append("<nav>" + "".join(f'<a href="#host-{i}">{_e(label)}</a>' for i, label in enumerate(labels))
                    + "</nav>")
        body.append(_summary(models))
    for i, m in enumerate(models):
        body.append(_host(page, m, f"host-{i}"))
    if not models:
        body.append("<p>No recordings.</p>")
    title = "tcpoom report: " + ", ".join(labels[:5]) + (" …" if len(labels) > 5 else "")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        # Defence in depth behind the escaping: load nothing from anywhere, and run no
        # script but ours (by hash), so even an injected handler attribute could not run
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src '{_SCRIPT_HASH}'\">",
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        "<header class=\"top\"><h1>tcpoom report</h1><p>TCP socket memory: orphans, tcp_mem, TIME_WAIT. "
        "All times UTC. Hover a chart for exact values.</p></header>",
        "".join(body),
        "<footer>Generated by tcpoom from the recording(s) named above; tcp_mem and sockstat mem are in pages, "
        "socket queues in bytes.</footer></main>",
        f"<script id=\"tcpoom-data\" type=\"application/json\">{_script_json({'charts': page.charts})}</script>",
        f"<script>{_SCRIPT}</script></body></html>\n",
    ])
