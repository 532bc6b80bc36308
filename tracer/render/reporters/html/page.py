"""The HTML page: every host's sections, the hosts side by side, the CSS and the
hover script (package files: report.css, hover.js, read with importlib.resources
so the page renders from a zipapp too), and the Content-Security-Policy that lets
only that script run."""
from __future__ import annotations

import base64
import hashlib
from importlib.resources import files
from typing import Any, List

from .text import (_clock, _dict, _e, _get, _host_label, _is_num, _list, _num, _rank, _script_json,
                   _sev)
from .svg import _Page
from .sections import _events, _findings, _gauges, _header, _timeline
from .tables import _crossed_peaks_limits, _distributions, _holders, _plan, _top


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


def _package_file(name: str) -> str:
    # by name: Python 3.9's zipimport runs this module with __package__ unset
    return files(__name__.rpartition(".")[0]).joinpath(name).read_text(encoding="utf-8")


_CSS = _package_file("report.css")
# The hover read-out. It only reads the JSON block and writes with textContent: the
# series names in it came from the model, and textContent cannot create elements.
_SCRIPT = _package_file("hover.js")
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
