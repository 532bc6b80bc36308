"""A holders snapshot as `ss -tmp` would print it: a summary line, a header, then
one line per socket (and its skmem)."""
from __future__ import annotations

from typing import List

from .tcp_sock import SKMEM_FIELDS

_SKMEM_SS = ("r", "rb", "t", "tb", "f", "w", "o", "bl", "d")  # how `ss -m` labels them

_SS_STATE = {
    "ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECV": "SYN-RECV",
    "FIN_WAIT1": "FIN-WAIT-1", "FIN_WAIT2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT",
    "CLOSE": "UNCONN", "CLOSE_WAIT": "CLOSE-WAIT", "LAST_ACK": "LAST-ACK", "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _process(entry: dict) -> str:
    owner = entry.get("owner")
    if entry.get("pids"):
        comm = entry.get("comm") or "?"
        where = f" [{entry['container']}]" if entry.get("container") else ""
        return "users:(" + ",".join(f'("{comm}",pid={p})' for p in entry["pids"]) + ")" + where
    return {"orphan": "orphan", "unaccepted": "in accept queue"}.get(owner, "-")


def format_holders(snap: dict, limit: int = 10) -> List[str]:
    """`ss -tmp`-like lines: a summary, a header, then one line per socket (plus its skmem)."""
    rows = snap.get("top", [])[:max(limit, 0)]
    lines = [f"{snap.get('sockets_total', 0)} TCP sockets in netns {snap.get('netns')}: "
             f"{_size(snap.get('mem_bytes_total', 0))} held, "
             f"{_size(snap.get('rx_bytes_total', 0))} unread, "
             f"{_size(snap.get('tx_bytes_total', 0))} unacknowledged"
             + ("" if snap.get("owners_complete", True) else " (process scan cut short)")]
    if not rows:
        return lines
    table = [("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Process")]
    for e in rows:
        state = _SS_STATE.get(e.get("state"), e.get("state"))
        rx, tx = e.get("rx_queue", 0), e.get("tx_queue", 0)
        if e.get("accept_queue") is not None:
            rx, tx = e["accept_queue"], e.get("accept_backlog") or 0   # as ss shows listeners
        remote = e.get("remote", "")
        if remote.endswith(":0"):
            remote = remote[:-1] + "*"     # no peer yet: ss prints the port as *
        table.append((state, str(rx), str(tx), e.get("local", ""), remote, _process(e)))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row, e in zip(table, [None] + rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
                     f"{row[3]:<{widths[3]}}  {row[4]:<{widths[4]}}  {row[5]}".rstrip())
        if e is not None and e.get("skmem"):
            skmem = e["skmem"]
            figures = ",".join(f"{label}{skmem[name]}"
                               for name, label in zip(SKMEM_FIELDS, _SKMEM_SS) if name in skmem)
            lines.append(f"\t skmem:({figures})")
    for m in snap.get("memcgs") or []:
        if m.get("limit"):
            pct = (f" ({m['sock'] * 100 // m['limit']}% of {m['limit_name']} {_size(m['limit'])})"
                   if m.get("version") == "v1" and m.get("sock") is not None
                   else f" ({m['limit_name']} {_size(m['limit'])})")
            lines.append(f"memory cgroup {m['path']}: sockets {_size(m.get('sock') or 0)}{pct}"
                         + (f", {m['failcnt']} charges refused" if m.get("failcnt") else ""))
    return lines
