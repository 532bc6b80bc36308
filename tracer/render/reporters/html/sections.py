"""The first sections of a host in the HTML report: the header, the gauges, the
findings, the timeline with the limits crossed, and the events."""
from __future__ import annotations

import datetime
from typing import Any, Iterable, Optional, Sequence

from .text import (MAX_ITEMS, MAX_ROWS, _FAMILY_COLOUR, _FAMILY_TITLE, _PROC_SERIES, _UTC, _capped,
                   _clock, _dict, _e, _get, _host_label, _is_num, _list, _more, _num, _parse_time,
                   _rank, _sev, _size)
from .svg import _Page, _gauge, _time_ticks


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (),
           cls: str = "") -> str:
    """Cells are HTML already escaped by the caller; head cells are our own words."""
    h = "".join(f'<th class="n">{c}</th>' if i in numeric else f"<th>{c}</th>" for i, c in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                     for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


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
    inc = _dict(src.get("incident"))
    if inc:
        limit = f' (limit: <b>{_e(inc.get("limit"))}</b>)' if inc.get("limit") else ""
        out.append(f'<p class="meta">Incident frozen by <code>tcpoom serve</code> on trigger '
                   f'<b>{_e(inc.get("trigger"))}</b>{limit} at {_e(inc.get("at"))}; triggers: '
                   + ", ".join(_e(t) for t in _list(inc.get("triggers"))) + "</p>")
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
