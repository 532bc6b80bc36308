"""The doctor's rules on the counters and the worst cases: what TcpExt moved by
during the interval (and before it), per-socket buffer maxima times sockets
against tcp_mem, and the memory tcp_max_orphans allows against the host's."""
from __future__ import annotations

from typing import Dict, List

from .doctor_figures import DROPS, HISTORY, SLOW_CONSUMERS, Figures, finding, pct, size


def buffers(fig: Figures, worst: dict) -> List[dict]:
    total, high = worst["buffer_bytes"], worst["tcp_mem_high_bytes"]
    if total is None or high is None or total <= high:
        return []
    # Autotuning lets each socket grow to tcp_rmem[2] of receive and tcp_wmem[2] of send
    # buffer, all charged against the one host-wide tcp_mem: overcommitted by design, real
    # only when many sockets fill up at once (slow consumers).
    return [finding(
        "buffer_worst_case", "info",
        f"Per-socket maxima times sockets ({size(total)}) exceed tcp_mem[2] ({size(high)})",
        "net.ipv4.tcp_mem[2]",
        [f"{worst['sockets']} TCP sockets x (tcp_rmem[2] {fig.tcp_rmem[2]} + tcp_wmem[2] "
         f"{fig.tcp_wmem[2]} bytes) = {size(total)}, {total / high:.1f}x tcp_mem[2] "
         f"= {fig.tcp_mem[2]} pages"],
        ["Normal overcommit while consumers drain their queues. If memory pressure or pruning "
         "counters move, find the slow consumers, or lower tcp_rmem[2]/tcp_wmem[2] so that one "
         "stuck socket cannot hold as much."],
        "tcp_mem is the real bound: a few hundred busy sockets filling their buffers reach it.")]


def orphan_memory(fig: Figures, worst: dict) -> List[dict]:
    cost, total = worst["orphan_bytes"], fig.mem_total
    if cost is None or not total or cost * 2 <= total:
        return []
    severity = "warning" if cost > total else "info"
    return [finding(
        "orphan_memory", severity,
        f"tcp_max_orphans x 64 KiB = {size(cost)}, {pct(cost, total)} of MemTotal "
        f"{size(total)}", "net.ipv4.tcp_max_orphans",
        [f"tcp_max_orphans {fig.tcp_max_orphans} x 64 KiB unswappable = {size(cost)}"],
        ["The limit no longer protects this host's memory: orphans could use it up before the "
         "limit trips. Lower net.ipv4.tcp_max_orphans towards four times the orphan peak."
         if severity == "warning" else
         "A storm of orphans could take more than half of memory before the limit trips."],
        "tcp_max_orphans exists to bound the memory held by sockets no process owns.")]


def counters(fig: Figures, table: Dict[str, dict]) -> List[dict]:
    d = {k: v["delta"] for k, v in table.items()}
    out: List[dict] = []
    per = f"in {fig.interval_s:g} s"
    if d["TCPAbortOnMemory"]:
        out.append(finding(
            "aborts_on_memory", "critical",
            f"{d['TCPAbortOnMemory']} connections killed by tcp_check_oom {per} (TCPAbortOnMemory)",
            None, [f"TCPAbortOnMemory +{d['TCPAbortOnMemory']}: orphans over tcp_max_orphans "
                   f"(with the shift penalty) or holding memory above tcp_mem[2]"],
            ["The kernel log prints at most 10 of these per 5 s: `tcpoom trace` shows each "
             "one with the limit it crossed."],
            "tcp_check_oom() resets and frees orphans when there are too many or TCP memory "
            "is over its hard limit."))
    if d["TCPTimeWaitOverflow"]:
        out.append(finding(
            "tw_overflow", "warning",
            f"{d['TCPTimeWaitOverflow']} connections closed without TIME_WAIT {per} "
            f"(TCPTimeWaitOverflow)", "net.ipv4.tcp_max_tw_buckets",
            ["the TIME_WAIT table of this namespace is full; the kernel logs nothing"]))
    if d["TCPMemoryPressures"]:
        chrono = d["TCPMemoryPressuresChrono"]
        out.append(finding(
            "pressure_entered", "warning",
            f"TCP entered memory pressure {d['TCPMemoryPressures']} times {per}",
            "net.ipv4.tcp_mem[1]",
            [f"TCPMemoryPressures +{d['TCPMemoryPressures']}"]
            + ([f"TCPMemoryPressuresChrono +{chrono} ms under pressure (added when left)"]
               if chrono else [])))
    drops = {k: d[k] for k in DROPS if d[k]}
    if drops:
        out.append(finding(
            "receive_drops", "warning",
            f"Received data dropped for lack of memory {per}: "
            + ", ".join(f"{k} +{v}" for k, v in drops.items()), None,
            [f"PruneCalled +{d['PruneCalled'] or 0}: receive queues collapsed to make room"],
            ["A socket over its receive budget (a reader that stopped) or tcp_mem refusing "
             "memory host-wide: peers retransmit what was dropped. " + SLOW_CONSUMERS],
            "tcp_data_queue() drops a segment when tcp_try_rmem_schedule() cannot charge it."))
    elif d["PruneCalled"]:
        out.append(finding(
            "receive_pruning", "info",
            f"Receive queues collapsed {d['PruneCalled']} times {per} (PruneCalled), nothing "
            f"dropped", None, ["slow readers fill their receive buffers"]))
    if d["TCPAbortOnTimeout"]:
        out.append(finding(
            "aborts_on_timeout", "info",
            f"{d['TCPAbortOnTimeout']} connections gave up on their retries {per} "
            f"(TCPAbortOnTimeout)", None,
            ["peers that stopped answering; for orphans, net.ipv4.tcp_orphan_retries bounds "
             "how long they hold memory"]))
    history = {k: table[k]["total"] for k in HISTORY
               if table[k]["total"] and not table[k]["delta"]}
    if history:
        out.append(finding(
            "history", "info",
            "Counted before, not during the interval: "
            + ", ".join(f"{k} {v}" for k, v in history.items()), None,
            ["totals since boot (or since the namespace was made); they did not move now"]))
    return out
