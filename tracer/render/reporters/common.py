"""Small helpers shared by the text reporters."""
from __future__ import annotations

from typing import List


def host_label(m: dict) -> str:
    return m["source"].get("hostname") or m["source"]["files"][0]


def crossed_line(c: dict) -> str:
    return (f"{c['limit']}: {c['episodes']} episode(s), {c['seconds']} s in all, "
            f"from {c['first']} to {c['last']}" + (f", {c['events']} events" if c["events"] else ""))


def peak_lines(m: dict) -> List[str]:
    p = m["peaks"]
    lim = m["limits"]
    out = []
    if "orphans" in p:
        out.append(f"orphans: {p['orphans']['value']} ({p['orphans'].get('source', 'exact')}) "
                   f"vs tcp_max_orphans {lim.get('tcp_max_orphans')} at {p['orphans']['at']}")
    if "orphans_shifted" in p:
        s = p["orphans_shifted"]
        out.append(f"orphans << shift: {s['orphans']} << {s['shift']} = {s['value']} at {s['at']}")
    if "memory_pages" in p:
        s = p["memory_pages"]
        out.append(f"TCP memory: {s['value']} pages ({s['bytes'] / 1048576:.1f} MiB), "
                   f"{s.get('pct_of_high')}% of tcp_mem[2] {lim.get('tcp_mem', [0, 0, 0])[2]} at {s['at']}")
    if "tw" in p:
        s = p["tw"]
        out.append(f"TIME_WAIT: {s['value']} vs tcp_max_tw_buckets {s.get('limit')} at {s['at']}")
    return out
