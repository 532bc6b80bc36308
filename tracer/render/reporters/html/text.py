"""The words of the HTML report: escaping (every string from the model goes
through `_e`), numbers, sizes and times for people, and safe reads of a model
that may come from a damaged or foreign recording."""
from __future__ import annotations

import datetime
import html
import json
import math
from typing import Any, Optional, Sequence, Tuple


MAX_POINTS = 600        # per series: a 600-px-wide chart cannot show more
MAX_ROWS = 20           # per table
MAX_ITEMS = 30          # per list inside a finding, per chart group
MAX_CHARS = 2000        # per free-text string (a path or a finding), so no one value can bloat the page

_UTC = datetime.timezone.utc
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2, "ok": 3}
# family colours are picked from a fixed table, never from the model
_FAMILY_COLOUR = {"oom_check": "#c62828", "tw_overflow": "#6a3fb5", "mem_exceed": "#d9480f",
                  "pressure": "#1565c0", "mem_drop": "#00838f"}
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
                 "pressure": "pressure: enter / leave memory pressure",
                 "mem_drop": "mem_drop: received segments dropped for memory (kfree_skb)"}


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
