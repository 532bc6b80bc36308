"""The tables of a host in the HTML report: limits crossed, peaks and limits in
force, distributions, top processes and ports, the holders and the probe plan."""
from __future__ import annotations

from typing import Any

from .text import (MAX_ITEMS, MAX_ROWS, _capped, _clock, _dict, _e, _get, _is_num, _list, _more,
                   _num, _size)
from .svg import _bar
from .sections import _table


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

    hint = ('The task running when the kernel decided: for timer and softirq paths this is whoever was on '
            'the CPU, not the socket\'s owner (see the holders for owners).'
            if t.get("processes_are", "contexts") == "contexts" else
            'The sockets\' owners: the process that listened, closed, or last sent or received on '
            'each socket, whatever task the kernel decided in (softirq, timer).')
    return ('<h3>Who: processes, ports, peers, namespaces</h3><p class="hint">' + hint + '</p><div class="cols4">'
            + block("Processes (comm, pid)", "processes", proc)
            + block("Local ports", "local_ports", lambda i: f'<span class="nw">{_e(i.get("port"))}</span>')
            + block("Remote peers", "remote_peers", lambda i: f"<code>{_e(i.get('peer'))}</code>")
            + block("Network namespaces", "netns", lambda i: f'<span class="nw">{_e(i.get("netns"))}</span>')
            + "</div>" + (
                '<div class="cols2">' + block("Services and containers (the sockets' owners)", "cgroups",
                                              lambda i: f"<code>{_e(i.get('container') or '-')}</code> "
                                                        f"<span class=\"muted\">{_e(i.get('cgroup') or '')}</span>")
                + "</div>" if t.get("cgroups") else ""))


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
