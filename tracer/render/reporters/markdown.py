"""`--format markdown`: the report for a ticket or a post-mortem."""
from __future__ import annotations

from typing import List

from .common import crossed_line, host_label, peak_lines, top_finding, words
from tracer.render.sparkline import sparkline


def _esc(text) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _host(m: dict) -> List[str]:
    out = [f"## {_esc(host_label(m))}", ""]
    src, span = m["source"], m["span"]
    out.append(f"Kernel {_esc(src['kernel'])}, engine {src['engine']}; {span['start']} to {span['end']} "
               f"({span['seconds']} s); files: {', '.join(_esc(f) for f in src['files'])}")
    inc = src.get("incident")
    if inc:
        limit = f" (limit: {_esc(inc['limit'])})" if inc.get("limit") else ""
        also = [t for t in inc.get("triggers") or [] if t != inc.get("trigger")]
        out += ["", f"**Incident** frozen by `tcpoom serve` on trigger **{_esc(inc.get('trigger'))}**{limit} "
                f"at {inc.get('at')}: {inc.get('before_s')} s before, {inc.get('after_s')} s after"
                + (f"; also fired: {', '.join(_esc(t) for t in also)}" if also else "") + "."]
    if src["damage"]:
        out += ["", "> **Damaged file:** " + "; ".join(_esc(d) for d in src["damage"]) +
                ". Reported up to the last complete block."]
    out += ["", "### Diagnosis", ""]
    for f in m["diagnosis"]:
        out.append(f"- **[{f['severity']}] {_esc(f['title'])}**")
        for e in f["evidence"]:
            out.append(f"  - {_esc(e)}")
        for a in f["advice"]:
            out.append(f"  - → {_esc(a)}")
        if f["why"]:
            out.append(f"  - why: {_esc(f['why'])}")
    if m["sysctl_snippet"]:
        out += ["", "```", m["sysctl_snippet"].rstrip(), "```"]
    out += ["", "### Events", "", "| family | events | verdicts | method | kernel counter | delta |",
            "|---|---:|---|---|---|---:|"]
    comp = m["kernel_counters"]["comparison"]
    for fam, n in m["events"]["by_family"].items():
        v = ", ".join(f"{k} {c}" for k, c in m["events"]["by_verdict"].get(fam, {}).items())
        p = m["plan"].get(fam, {})
        c = comp.get(fam, {})
        out.append(f"| {fam} | {n} | {v} | {p.get('method', '')} {_esc(p.get('target', ''))} | "
                   f"{c.get('kernel_counter', '')} | {'' if c.get('kernel_delta') is None else c['kernel_delta']} |")
    if m["loss"]:
        out.append(f"\nLost in the ring buffer: {words(m['loss'])}")
    if m.get("missed"):
        out.append(f"\nMissed by the probes (the kernel's own miss counts): {words(m['missed'])}")
    if m["crossed"]:
        out += ["", "### Limits crossed", ""] + [f"- {_esc(crossed_line(c))}" for c in m["crossed"]]
    peaks = peak_lines(m)
    if peaks:
        out += ["", "### Peaks", ""] + [f"- {_esc(p)}" for p in peaks]
    ser = m["series"]
    if ser["events"]:
        out += ["", f"### Per second (from {ser['t0']})", "", "```"]
        for fam, vals in ser["events"].items():
            out.append(f"{fam:<12} {sparkline(vals)} max {max(vals)}/s")
        for k, vals in ser["proc"].items():
            if any(v is not None for v in vals):
                out.append(f"{'sockstat ' + k:<12} {sparkline(vals)} max {max(v or 0 for v in vals)}")
        out.append("```")
    dist = m["distributions"]
    if dist["shift"]:
        out += ["", "Shift at the decision: " + ", ".join(f"{k}: {v}" for k, v in dist["shift"].items())]
    if dist["orphans_at_decision"]:
        out.append("Orphans at the decision (power-of-two buckets): " +
                   ", ".join(f"≥{k}: {v}" for k, v in dist["orphans_at_decision"].items()))
    t = m["top"]
    out += ["", "### Top", "", "| processes | local ports | remote peers | netns |", "|---|---|---|---|"]
    for i in range(max(len(t["processes"]), len(t["local_ports"]), len(t["remote_peers"]), len(t["netns"]), 0)):
        cells = []
        cells.append(f"{_esc(t['processes'][i]['comm'])} ({t['processes'][i]['pid']}): {t['processes'][i]['events']}"
                     if i < len(t["processes"]) else "")
        cells.append(f"{t['local_ports'][i]['port']}: {t['local_ports'][i]['events']}" if i < len(t["local_ports"]) else "")
        cells.append(f"{t['remote_peers'][i]['peer']}: {t['remote_peers'][i]['events']}" if i < len(t["remote_peers"]) else "")
        cells.append(f"{t['netns'][i]['netns']}: {t['netns'][i]['events']}" if i < len(t["netns"]) else "")
        out.append("| " + " | ".join(cells) + " |")
    if t.get("cgroups"):
        out += ["", "### Services and containers (the sockets' owners)", "",
                "| container / service | cgroup | events | by family |", "|---|---|---|---|"]
        for r in t["cgroups"]:
            out.append(f"| {_esc(r.get('container') or '-')} | {_esc(r.get('cgroup') or r.get('memcg') or '-')} | "
                       f"{r['events']} | " + ", ".join(f"{k} {v}" for k, v in r["by_family"].items()) + " |")
    h = m["holders"]
    if h["snapshots"]:
        out += ["", f"### Sockets holding the most memory ({h['snapshots']} snapshots during pressure)", ""]
        for p in h["processes"]:
            out.append(f"- {_esc(p['comm'])} (pid {', '.join(map(str, p['pids'])) or '?'}): up to {p['max_bytes']} bytes")
    return out


def render(models: List[dict]) -> str:
    out = ["# tcpoom report", ""]
    if len(models) > 1:
        out += ["| | " + " | ".join(_esc(host_label(m)) for m in models) + " |",
                "|---|" + "---|" * len(models)]
        fams = sorted({f for m in models for f in m["events"]["by_family"]})
        for fam in fams:
            out.append(f"| {fam} | " + " | ".join(str(m["events"]["by_family"].get(fam, 0)) for m in models) + " |")
        out.append("| top finding | " + " | ".join(_esc(top_finding(m)) for m in models) + " |")
        out.append("")
    for m in models:
        out += _host(m) + [""]
    return "\n".join(out)
