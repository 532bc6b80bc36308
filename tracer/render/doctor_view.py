"""The text of `tcpoom doctor`: its report (the --json keys) as rich
renderables on a console: the figures now, the TcpExt counters, the findings
with their advice and sysctl snippet, the probe plan, what was not available."""
from __future__ import annotations

from tracer.model.units import size

_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}


def _n(value) -> str:
    return "?" if value is None else str(value)


def render(r: dict, console) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def heading(title: str) -> None:
        console.print()
        console.print(Text(title, style="bold underline"))

    def grid(rows, first_style: str = "") -> None:
        # Two columns, so a long second column wraps under itself, not under the first.
        t = Table.grid(padding=(0, 1))
        t.add_column(style=first_style, no_wrap=True)
        t.add_column()
        for left, right in rows:
            t.add_row(Text(left), right if isinstance(right, Text) else Text(right))
        console.print(t)

    page = r["host"]["page_size"]
    ns = r["netns"]
    where = "own" if ns["own"] else ns["requested"]
    console.print(Text.assemble(("tcpoom doctor", "bold"),
                                f"  {r['host']['hostname']}, kernel {r['host']['kernel']}, "
                                f"network namespace {where} (inode {_n(ns['inode'])})"))
    missing = len(r["not_checked"])
    console.print(Text.assemble("verdict: ", (r["verdict"].upper(), _STYLE[r["verdict"]]),
                                f" (exit code {r['exit_code']})",
                                (f"; {missing} check{'s' * (missing > 1)} not possible: "
                                 f"see 'Not available'" if missing else "", "yellow")))

    tcp, lim = r["tcp"], r["limits"]
    heading("TCP now")
    rows = []
    tm, mem = lim["tcp_mem_pages"], tcp["mem_pages"]
    line = f"{_n(mem)} pages" + ("" if mem is None else f" = {size(mem * page)}")
    if tm and mem is not None:
        line += f", {100.0 * mem / max(tm[2], 1):.0f}% of tcp_mem[2]"
    margin = tcp.get("mem_margin_pages")
    if margin and mem is not None:
        line += (f"; ± {margin} pages ({size(margin * page)}) held in per-CPU reserves "
                 f"(6.0+: the figure is global)")
    rows.append(("memory (host)", line))
    rows.append(("tcp_mem", "?" if not tm else
                 f"{tm[0]} / {tm[1]} / {tm[2]} pages (low / pressure / high) = "
                 f"{size(tm[0] * page)} / {size(tm[1] * page)} / {size(tm[2] * page)}: "
                 f"pages, not bytes (a page is {page} bytes)"))
    press = tcp["memory_pressure"]
    rows.append(("memory pressure", ("?" if press is None else ("yes" if press else "no"))
                 + " (entered above tcp_mem[1], left below tcp_mem[0])"))
    mx, orph = lim["tcp_max_orphans"], tcp["orphan"]
    line = _n(orph)
    if mx is not None:
        line += (f" of tcp_max_orphans {mx}" + (f" ({100.0 * orph / mx:.0f}%)" if mx and orph
                                               is not None else "")
                 + f"; killed above {mx} / {mx >> 1} / {mx >> 2} at shift 0 / 1 / 2")
    rows.append(("orphans (host)", line))
    tw, mtw = tcp["tw"], lim["tcp_max_tw_buckets"]
    rows.append(("TIME_WAIT (netns)", f"{_n(tw)} of tcp_max_tw_buckets {_n(mtw)}"
                 + (f" ({100.0 * tw / mtw:.0f}%)" if tw is not None and mtw else "")))
    rows.append(("sockets", f"{_n(tcp['inuse'])} IPv4 + {_n(tcp['inuse6'])} IPv6 in use "
                            f"(netns), {_n(tcp['alloc'])} allocated (host)"))
    if lim["tcp_rmem"] and lim["tcp_wmem"]:
        rows.append(("buffers (netns)",
                     f"tcp_rmem {' '.join(map(str, lim['tcp_rmem']))}, tcp_wmem "
                     f"{' '.join(map(str, lim['tcp_wmem']))} bytes (min default max)"))
    wc = r["worst_case"]
    if wc["buffer_bytes"] is not None:
        rows.append(("worst case", f"{wc['sockets']} sockets x (tcp_rmem[2] + tcp_wmem[2]) = "
                                   f"{size(wc['buffer_bytes'])} against tcp_mem[2] "
                                   f"{size(wc['tcp_mem_high_bytes'])}"))
    if wc["orphan_bytes"] is not None:
        rows.append(("worst case", f"tcp_max_orphans x 64 KiB unswappable = "
                                   f"{size(wc['orphan_bytes'])}"
                                   + (f" against MemTotal {size(wc['mem_total_bytes'])}"
                                      if wc["mem_total_bytes"] else "")))
    grid(rows, first_style="bold")

    heading(f"TcpExt counters (delta over {r['counters']['interval_s']:g} s)")
    t = Table(box=box.SIMPLE_HEAD, show_edge=False)
    t.add_column("counter")
    t.add_column("total", justify="right")
    t.add_column("delta", justify="right")
    for name, v in r["counters"]["TcpExt"].items():
        delta = v["delta"]
        t.add_row(name, _n(v["total"]),
                  Text(_n(delta if not delta else f"+{delta}"), style="bold" if delta else ""))
    console.print(t)

    heading("Findings")
    for f in r["findings"]:
        console.print(Text.assemble((f"[{f['severity']}] ", _STYLE[f["severity"]]),
                                    (f["title"], "bold")))
        rows = [("  ·", e) for e in f["evidence"]] + [("  →", a) for a in f["advice"]]
        if f["why"]:
            rows.append(("  ·", Text("why: " + f["why"], style="dim")))
        if rows:
            grid(rows)
    if r["sysctl_snippet"]:
        console.print()
        # Never wrapped: it is meant to be copied into a file as it is.
        console.print(Text(r["sysctl_snippet"].rstrip(), style="green"), soft_wrap=True)

    p = r["plan"]
    if p is not None:
        heading("What tcpoom can attach here (probe plan)")
        if p["available"]:
            console.print(Text(f"engine {p['engine']}" + "".join(f"; {n}" for n in p["notes"])))
            t = Table(box=box.SIMPLE_HEAD, show_edge=False)
            for col in ("family", "method", "target", "sampled from /proc"):
                t.add_column(col)
            for name, fam in p["families"].items():
                t.add_row(name, fam["method"], Text(fam["target"]),
                          Text(", ".join(fam["sampled"]) or "-"))
            console.print(t)
            console.print(Text("`tcpoom probes` gives every field's fidelity and why each "
                               "better method was rejected", style="dim"))
        if p["partial"]:
            console.print(Text("partial: gathered without full privileges", style="yellow"))
            grid([("  ·", why) for why in p["partial_why"]])

    if r["unavailable"] or r["not_checked"]:
        heading("Not available")
        grid([("  ·", f"{u['what']}: {u['why']}") for u in r["unavailable"]]
             + [("  ·", f"not checked: {n}") for n in r["not_checked"]])
