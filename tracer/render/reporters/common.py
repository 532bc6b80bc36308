"""Small helpers shared by the text reporters."""
from __future__ import annotations

from typing import List


def host_label(m: dict) -> str:
    return m["source"].get("hostname") or m["source"]["files"][0]


def crossed_line(c: dict) -> str:
    return (f"{c['limit']}: {c['episodes']} episode(s), {c['seconds']} s in all, "
            f"from {c['first']} to {c['last']}" + (f", {c['events']} events" if c["events"] else ""))


def _in_force(now, at_start) -> str:
    """A limit in force at a peak, and the one at the start when they differ."""
    return f"{now} in force then ({at_start} at the start)" if at_start is not None and now != at_start \
        else f"{now}"


def peak_lines(m: dict) -> List[str]:
    """Each peak against the limit in force at its moment (the model's peaks
    carry it), never the one at the start alone."""
    p = m["peaks"]
    lim = m["limits"]
    out = []
    if "orphans" in p:
        s = p["orphans"]
        out.append(f"orphans: {s['value']} ({s.get('source', 'exact')}) vs tcp_max_orphans "
                   f"{_in_force(s.get('limit', lim.get('tcp_max_orphans')), lim.get('tcp_max_orphans'))} "
                   f"at {s['at']}")
    if "orphans_shifted" in p:
        s = p["orphans_shifted"]
        out.append(f"orphans << shift: {s['orphans']} << {s['shift']} = {s['value']} at {s['at']}")
    if "memory_pages" in p:
        s = p["memory_pages"]
        start = lim.get("tcp_mem", [0, 0, 0])[2]
        out.append(f"TCP memory: {s['value']} pages ({s['bytes'] / 1048576:.1f} MiB), "
                   f"{s.get('pct_of_high')}% of tcp_mem[2] {_in_force(s.get('tcp_mem2', start), start)} "
                   f"at {s['at']}")
    if m.get("memory_margin") and "memory_pages" in p:
        out.append(f"TCP memory is the global figure: the real total is within {m['memory_margin']['text']}")
    if "tw" in p:
        s = p["tw"]
        out.append(f"TIME_WAIT: {s['value']} vs tcp_max_tw_buckets "
                   f"{_in_force(s.get('limit'), lim.get('tcp_max_tw_buckets'))} at {s['at']}")
    return out


def words(d: dict) -> str:
    """A small mapping in prose: 'close 40, timer 2', never a Python dict."""
    return ", ".join(f"{k} {v}" for k, v in d.items())


def top_finding(m: dict) -> str:
    """The title of the worst finding (findings come worst first); a healthy
    host's 'no limit was hit' rather than a note about fidelity."""
    d = m["diagnosis"]
    return next((f["title"] for f in d if f["severity"] != "info"), d[0]["title"] if d else "")
