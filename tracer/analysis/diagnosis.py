"""From figures to advice: which limit was hit, what to change, and why.

The reasoning an expert applies (docs/design.md "Diagnosis"): compare like with
like (tcp_mem and sockstat mem are pages, not bytes), size tcp_max_orphans for
the shift penalty, look for slow consumers before raising limits, and prefer
tcp_tw_reuse over bigger TIME_WAIT tables (never tcp_tw_recycle).
"""
from __future__ import annotations

from typing import List, Tuple

SEVERITY_ORDER = ("critical", "warning", "info", "ok")
ORPHAN_COST = 64 * 1024      # an orphan may pin up to ~64 KiB of unswappable memory


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 20):,.0f} MiB"


def _round_up(n: int, step: int) -> int:
    return ((n + step - 1) // step) * step


def raise_only(wanted, at_start):
    """The one rule every sysctl advice goes through: a value is only ever
    raised from the host's value at the start of the recording, never lowered
    (a limit lowered in a lab namespace, or for a moment, must not become the
    advice: applying it would cut the host's limit). A triple (tcp_mem) is
    raised member by member. None when nothing would be raised."""
    if isinstance(wanted, (list, tuple)):
        start = [int(v) for v in at_start] if at_start else [0] * len(wanted)
        value = [max(int(w), s) for w, s in zip(wanted, start)]
        return value if value != start else None
    if at_start is None:
        return int(wanted)
    return int(wanted) if int(wanted) > int(at_start) else None


def lowered(at_start, in_force) -> bool:
    """The limit in force at the events was below the one at the start."""
    return in_force is not None and bool(at_start) and in_force < at_start


def _sysctl(name: str, value) -> str:
    return f"net.ipv4.{name} = " + (" ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))


def diagnose(m: dict, header: dict) -> Tuple[List[dict], str]:
    findings: List[dict] = []
    snippet: List[str] = []
    lim = m["limits"]
    page = lim.get("page_size", 4096)
    fam = m["events"]["by_family"]
    verdicts = m["events"]["by_verdict"]
    peaks = m["peaks"]
    mem_total = header.get("mem_total_kb", 0) * 1024

    # ---- TIME_WAIT overflow
    during = m.get("limits_during_events", {})
    if fam.get("tw_overflow"):
        n = fam["tw_overflow"]
        tw = peaks.get("tw", {})
        at_start = lim.get("tcp_max_tw_buckets")
        in_force = during.get("tcp_max_tw_buckets", tw.get("limit"))
        limit = in_force if in_force is not None else at_start
        was_lowered = lowered(at_start, in_force)
        ports = m["top"]["local_ports"]
        peers = m["top"]["remote_peers"]
        peak = int(tw.get("value") or 0)
        advice = [
            "Find who closes first: the side that closes first holds TIME_WAIT. "
            f"Top local ports: {', '.join(str(p['port']) for p in ports[:3]) or '?'}; "
            f"top peers: {', '.join(p['peer'] for p in peers[:3]) or '?'}.",
            "For outbound connection churn (this host is the client): reuse connections "
            "(keep-alive, pooling), and set net.ipv4.tcp_tw_reuse=1 so new outbound "
            "connections may reuse TIME_WAIT ports safely (timestamps keep it safe).",
            "Never tcp_tw_recycle: it broke clients behind NAT and was removed in Linux 4.12.",
        ]
        new_limit = raise_only(_round_up(peak * 2, 1024), at_start) if peak else None
        if was_lowered:
            advice.insert(0, f"net.ipv4.tcp_max_tw_buckets was {in_force} when the overflows happened but "
                             f"{at_start} at the start of the recording"
                             + (", which covers twice the peak" if new_limit is None else "")
                             + ": find what lowered it (it is set per network namespace) before "
                               "tuning anything else.")
        if new_limit is not None:
            advice.append(f"If the churn is legitimate, raise net.ipv4.tcp_max_tw_buckets to about "
                          f"{new_limit} (twice the peak of {peak}); a TIME_WAIT socket costs only "
                          f"a few hundred bytes.")
            snippet.append(_sysctl("tcp_max_tw_buckets", new_limit))
        snippet.append("net.ipv4.tcp_tw_reuse = 1")
        findings.append({
            "id": "tw_overflow", "severity": "warning",
            "title": f"TIME_WAIT table full: {n} connections closed without TIME_WAIT",
            "evidence": [f"{n} overflows; TIME_WAIT count {tw.get('value')} against "
                         f"tcp_max_tw_buckets {limit} in force then"
                         + (f", {at_start} at the start" if was_lowered else "")
                         + " (per network namespace since 4.11)",
                         "the kernel logs nothing for this since 2.6.37: only TcpExt TCPTimeWaitOverflow moves"],
            "advice": advice,
            "why": "Without TIME_WAIT a late duplicate segment of the old connection can be taken "
                   "for data of a new one on the same 4-tuple.",
        })

    # ---- orphans
    oom = verdicts.get("oom_check", {})
    if oom.get("too_many_orphans"):
        n = oom["too_many_orphans"]
        po = peaks.get("orphans", {})
        ps = peaks.get("orphans_shifted", {})
        max_orphans = lim.get("tcp_max_orphans")
        in_force = during.get("tcp_max_orphans")
        peak = max(po.get("value") or 0, ps.get("orphans") or 0)
        shifts = m["distributions"]["shift"]
        top_shift = max((int(k) for k in shifts), default=0)
        raised = raise_only(_round_up(max(peak, 1) * 4, 1024), max_orphans)
        want = raised if raised is not None else int(max_orphans or 0)
        mem_note = ""
        if mem_total:
            mem_note = (f" At {want} orphans x 64 KiB that is up to {_mib(want * ORPHAN_COST)} "
                        f"of this host's {_mib(mem_total)}.")
        orphan_advice = []
        if lowered(max_orphans, in_force):
            orphan_advice.append(
                f"net.ipv4.tcp_max_orphans was {in_force} when the sockets were killed but is {max_orphans} "
                f"outside that moment" + (f", which covers four times the peak ({peak * 4})" if raised is None
                                          else "") + ": find what lowered it.")
        if raised is not None:
            orphan_advice.append(f"Size net.ipv4.tcp_max_orphans at about four times the peak to absorb the "
                                 f"4x penalty: {want}.{mem_note}")
        elif not orphan_advice:
            orphan_advice.append(f"net.ipv4.tcp_max_orphans {max_orphans} already covers four times the "
                                 f"peak ({peak * 4}).")
        findings.append({
            "id": "orphans", "severity": "critical",
            "title": f"Too many orphaned sockets: {n} connections killed (TCPAbortOnMemory)",
            "evidence": [
                f"peak orphans {peak} ({po.get('source', 'exact')}) against tcp_max_orphans "
                f"{in_force if in_force is not None else max_orphans}"
                + (f" when the sockets were killed ({max_orphans} at the start)"
                   if in_force is not None and in_force != max_orphans else ""),
                f"highest shift {top_shift}: on the timer path the count is doubled per step "
                f"(orphans << shift), so {peak} orphans count as {peak << top_shift}"
                + (f"; worst decision {ps.get('orphans')} << {ps.get('shift')} = {ps.get('value')}"
                   if ps else ""),
                "callers: " + (", ".join(f"{k} {v}" for k, v in m["events"]["oom_callers"].items()) or "?"),
            ],
            "advice": orphan_advice + [
                "Orphans are sockets the application closed with data still unsent or unacknowledged: "
                "look for peers that stop reading (see the holders) and for applications closing "
                "busy connections; a lower net.ipv4.tcp_orphan_retries ends them sooner.",
            ],
            "why": "An orphan belongs to no process; the kernel bounds them by count and kills the "
                   "excess with a reset, so peers see connection resets mid-transfer.",
        })
        if raised is not None:
            snippet.append(_sysctl("tcp_max_orphans", raised))

    # ---- tcp_mem
    hard = oom.get("out_of_memory", 0) + fam.get("mem_exceed", 0)
    pressure = fam.get("pressure", 0)
    if hard or pressure:
        tm = lim.get("tcp_mem") or [0, 0, 0]
        pm = peaks.get("memory_pages", {})
        peak_pages = pm.get("value") or 0
        holders = m["holders"]["processes"]
        slow = ", ".join(f"{h['comm']} ({_mib(h['max_bytes'])})" for h in holders[:3])
        in_force = during.get("tcp_mem_high")
        over = peaks.get("memory_over")
        was_lowered = lowered(tm[2], in_force)
        high = _round_up(int(peak_pages * 1.5), 256)
        new = raise_only([high // 2, high * 3 // 4, high], tm)
        advice = []
        if slow:
            advice.append(f"First the slow consumers: the sockets holding the most memory belonged to {slow}. "
                          "Queues that do not drain (a reader that stopped, a peer that stopped "
                          "acknowledging) are the usual root cause; raising limits only delays it.")
        advice.append(f"Per-socket maxima times connections: tcp_rmem[2] {lim.get('tcp_rmem', ['?'] * 3)[2]} "
                      f"and tcp_wmem[2] {lim.get('tcp_wmem', ['?'] * 3)[2]} bytes per socket can exceed "
                      f"tcp_mem[2] ({_mib(tm[2] * page)}) with a few hundred busy connections.")
        if was_lowered:
            advice.insert(0, f"tcp_mem[2] was {in_force} pages while the refusals happened, {tm[2]} "
                             f"outside that moment: find what lowered it before tuning anything else.")
        elif hard and new is not None:
            advice.append(f"If the memory is really needed, raise net.ipv4.tcp_mem - in PAGES of {page} bytes, "
                          f"not bytes - to about {new[0]} {new[1]} {new[2]} "
                          f"({_mib(new[2] * page)} at the hard limit)"
                          + (f"; this host has {_mib(mem_total)}." if mem_total else "."))
            snippet.append(_sysctl("tcp_mem", new))
        evidence = [f"peak TCP memory {peak_pages} pages ({_mib(peak_pages * page)}) at {pm.get('at')}; "
                    f"tcp_mem at the start {tm[0]}/{tm[1]}/{tm[2]} pages (low/pressure/high)"]
        if over and over["value"] > 100:
            evidence.append(f"furthest over the hard limit: {over['pages']} pages against tcp_mem[2] = "
                            f"{over['tcp_mem2']} pages in force then ({over['value']}%) at {over['at']}")
        elif over:
            # refused below the hard limit: under pressure the kernel also
            # refuses a socket above its fair share (tcp_mem[2] / sockets)
            evidence.append(f"refused below the hard limit, under pressure: at most {over['pages']} pages "
                            f"against tcp_mem[2] = {over['tcp_mem2']} ({over['value']}%) at {over['at']}; "
                            f"a socket above its share (tcp_mem[2] / sockets) is refused there")
        evidence.append("sockstat 'mem' and tcp_mem are both in pages: compare pages with pages")
        findings.append({
            "id": "tcp_mem", "severity": "critical" if hard else "warning",
            "title": (f"TCP memory at the hard limit: {hard} refusals or aborts" if hard
                      else f"TCP memory pressure entered {pressure} times"),
            "evidence": evidence,
            "advice": advice,
            "why": "Above tcp_mem[1] TCP shrinks buffers for everyone; above tcp_mem[2] every new "
                   "allocation is refused: sends stall, received data is dropped, orphans are killed.",
        })

    # ---- loss and fidelity
    lost = sum(m["loss"].values())
    if lost:
        findings.append({"id": "loss", "severity": "warning",
                         "title": f"{lost} events lost in the ring buffer",
                         "evidence": ["per family: " + ", ".join(f"{k} {v}" for k, v in m["loss"].items())],
                         "advice": ["Record again with a larger --ringbuf-size; the counts stay exact "
                                    "(in-kernel counters), only per-event detail was lost."],
                         "why": "The ring buffer was full when the kernel side wanted to write."})
    missed = sum((m.get("missed") or {}).values())
    if missed:
        findings.append({"id": "missed", "severity": "warning",
                         "title": f"{missed} calls the probes did not see (the kernel's own miss counts)",
                         "evidence": ["per family: " + ", ".join(f"{k} {v}" for k, v in m["missed"].items())],
                         "advice": ["These are neither counted nor detailed: compare the family's count "
                                    "with its TcpExt counter; fentry/fexit (5.5+ with BTF) misses least."],
                         "why": "A BPF program does not run while it (or, for kprobes, another kprobe "
                                "program) is already running on that CPU, and kprobes do not nest; the "
                                "kernel counts both (recursion_misses, kprobe missed)."})
    sampled = sorted({f"{fam}.{k}" for fam, p in m["plan"].items()
                      for k, v in p["fields"].items() if v == "sampled"})
    if sampled:
        findings.append({"id": "fidelity", "severity": "info",
                         "title": "Some figures were sampled from /proc, not read at the decision",
                         "evidence": sampled,
                         "advice": ["A kernel with kprobes or fentry and full kallsyms gives them exactly "
                                    "(`tcpoom probes` on that host says so)."],
                         "why": "This kernel does not let BPF read those values at the moment of the event."})
    if not any(f["severity"] in ("critical", "warning") for f in findings):
        findings.insert(0, {"id": "healthy", "severity": "ok",
                            "title": "No TCP socket-memory limit was hit while recording",
                            "evidence": [], "advice": [], "why": ""})
    # the worst first, in every format (all of them render this order)
    findings.sort(key=lambda f: SEVERITY_ORDER.index(f["severity"]))
    text = ""
    if snippet:
        text = ("# /etc/sysctl.d/90-tcpoom.conf - sized from this recording; apply with `sysctl --system`\n"
                + "\n".join(dict.fromkeys(snippet)) + "\n")
    return findings, text
