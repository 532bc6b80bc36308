"""The default report: rich tables on the terminal."""
from __future__ import annotations

import io
from typing import List

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .common import crossed_line, host_label, peak_lines, top_finding, words
from tracer.render.sparkline import sparkline

_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}


def _diagnosis(m: dict) -> Group:
    parts = []
    for f in m["diagnosis"]:
        parts.append(Text.assemble((f"[{f['severity']}] ", _STYLE.get(f["severity"], "")),
                                   (f["title"], "bold")))
        for e in f["evidence"]:
            parts.append(Text("  · " + e))
        for a in f["advice"]:
            parts.append(Text("  → " + a))
        if f["why"]:
            parts.append(Text("  why: " + f["why"], style="dim"))
    if m["sysctl_snippet"]:
        parts.append(Text(""))
        parts.append(Text(m["sysctl_snippet"].rstrip(), style="green"))
    return Group(*parts)


def _events(m: dict) -> Group:
    """The family table, then how each family was caught: at 80 columns
    nothing is cut (the attach methods are long, so they go below)."""
    t = Table(box=box.SIMPLE_HEAD, expand=False)
    for col in ("family", "events", "verdicts", "kernel counter", "delta"):
        t.add_column(col, justify="right" if col in ("events", "delta") else "left", no_wrap=True)
    comp = m["kernel_counters"]["comparison"]
    for fam, n in m["events"]["by_family"].items():
        v = "\n".join(f"{k} {c}" for k, c in m["events"]["by_verdict"].get(fam, {}).items())
        c = comp.get(fam, {})
        t.add_row(fam, str(n), v, c.get("kernel_counter", ""),
                  "" if c.get("kernel_delta") is None else str(c["kernel_delta"]))
    how = [Text(f"  {fam}: caught by {p.get('method', '')} {p.get('target', '')}")
           for fam, p in m["plan"].items() if fam in m["events"]["by_family"]]
    return Group(t, *how)


def _top(m: dict) -> Table:
    t = Table(box=box.SIMPLE_HEAD, title="top")
    for col in ("process (pid)", "events", "local port", "events ", "remote peer", "events  "):
        t.add_column(col, justify="right" if col.startswith("events") else "left")
    tp = m["top"]
    rows = max(len(tp["processes"]), len(tp["local_ports"]), len(tp["remote_peers"]))
    for i in range(min(rows, 5)):
        p = tp["processes"][i] if i < len(tp["processes"]) else None
        lp = tp["local_ports"][i] if i < len(tp["local_ports"]) else None
        rp = tp["remote_peers"][i] if i < len(tp["remote_peers"]) else None
        t.add_row(f"{escape(p['comm'])} ({p['pid']})" if p else "", str(p["events"]) if p else "",
                  str(lp["port"]) if lp else "", str(lp["events"]) if lp else "",
                  rp["peer"] if rp else "", str(rp["events"]) if rp else "")
    return t


def _cgroups(m: dict) -> Table:
    """Which service, container or pod: the sockets' owners by cgroup."""
    t = Table(box=box.SIMPLE_HEAD, title="services and containers (the sockets' owners)")
    for col in ("container / service", "cgroup", "events", "by family"):
        t.add_column(col, justify="right" if col == "events" else "left")
    for r in m["top"]["cgroups"][:5]:
        t.add_row(escape(r.get("container") or "-"), escape(r.get("cgroup") or r.get("memcg") or "-"),
                  str(r["events"]), ", ".join(f"{k} {v}" for k, v in r["by_family"].items()))
    return t


def _host(m: dict) -> Panel:
    src, span = m["source"], m["span"]
    parts = [Text(f"kernel {src['kernel']}, engine {src['engine']}; {span['start']} → {span['end']} "
                  f"({span['seconds']} s)", style="dim")]
    if src["damage"]:
        parts.append(Text("damaged file: " + "; ".join(src["damage"]) +
                          " — reported up to the last complete block", style="bold red"))
    parts += [Text(""), _diagnosis(m), Text(""), _events(m)]
    if m["loss"]:
        parts.append(Text(f"lost in the ring buffer: {words(m['loss'])}", style="yellow"))
    if m.get("missed"):
        parts.append(Text(f"missed by the probes (kernel's counts): {words(m['missed'])}", style="yellow"))
    if m["crossed"]:
        parts.append(Text("limits crossed", style="bold"))
        parts += [Text("  " + crossed_line(c)) for c in m["crossed"]]
    peaks = peak_lines(m)
    if peaks:
        parts.append(Text("peaks", style="bold"))
        parts += [Text("  " + p) for p in peaks]
    ser = m["series"]
    if ser["events"]:
        parts.append(Text(f"per second from {ser['t0']}", style="bold"))
        for fam, vals in ser["events"].items():
            parts.append(Text(f"  {fam:<12} {sparkline(vals, 50)} max {max(vals)}/s"))
    d = m["distributions"]
    if d["shift"]:
        parts.append(Text("shift at the decision: " + ", ".join(f"{k}: {v}" for k, v in d["shift"].items())))
    if m["top"]["processes"]:
        parts.append(_top(m))
    if m["top"].get("cgroups"):
        parts.append(_cgroups(m))
    h = m["holders"]
    if h["snapshots"]:
        parts.append(Text(f"sockets holding the most memory ({h['snapshots']} snapshots during pressure)",
                          style="bold"))
        for p in h["processes"][:5]:
            pids = ", ".join(map(str, p["pids"])) or "?"
            parts.append(Text(f"  {p['comm']} (pid {pids}): up to {p['max_bytes']:,} bytes"))
    return Panel(Group(*parts), title=f"tcpoom report: {escape(host_label(m))}", title_align="left")


def _side_by_side(models: List[dict]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, title="hosts side by side")
    t.add_column("")
    for m in models:
        t.add_column(host_label(m), justify="right")
    fams = sorted({f for m in models for f in m["events"]["by_family"]})
    for fam in fams:
        t.add_row(fam, *[str(m["events"]["by_family"].get(fam, 0)) for m in models])
    t.add_row("top finding", *[top_finding(m) for m in models])
    return t


def render(models: List[dict], width: int = 100) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False,
                      highlight=False, emoji=False)
    if len(models) > 1:
        console.print(_side_by_side(models))
    for m in models:
        console.print(_host(m))
    return buf.getvalue()


def print_to_terminal(models: List[dict]) -> None:
    Console(highlight=False, emoji=False).print(*(
        [_side_by_side(models)] if len(models) > 1 else []), *[_host(m) for m in models])
