"""From figures to advice: which limit was hit, what to change, and why.

The reasoning an expert applies (docs/design.md "Diagnosis"): compare like with
like (tcp_mem and sockstat mem are pages, not bytes), size tcp_max_orphans for
the shift penalty, look for slow consumers before raising limits, and prefer
tcp_tw_reuse over bigger TIME_WAIT tables (never tcp_tw_recycle).
"""
from __future__ import annotations

from typing import List, Tuple

from .sizing import (ORPHAN_COST, ORPHANS_CAUSE, TW_ADVICE, TW_SILENT, TW_WHO, TW_WHY,
                     max_orphans_for, orphans_raise, raise_only, sysctl_line, tcp_mem_for,
                     tcp_mem_raise, tw_buckets_for, tw_raise)

__all__ = ["ORPHAN_COST", "SEVERITY_ORDER", "diagnose", "lowered", "raise_only"]

SEVERITY_ORDER = ("critical", "warning", "info", "ok")


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 20):,.0f} MiB"


def lowered(at_start, in_force) -> bool:
    """The limit in force at the events was below the one at the start."""
    return in_force is not None and bool(at_start) and in_force < at_start


class _Recording:
    """What every finding reads from the report model `m` and the header."""

    def __init__(self, m: dict, header: dict):
        self.m = m
        self.lim = m["limits"]
        self.page = self.lim.get("page_size", 4096)
        self.fam = m["events"]["by_family"]
        self.oom = m["events"]["by_verdict"].get("oom_check", {})
        self.peaks = m["peaks"]
        self.during = m.get("limits_during_events", {})
        self.mem_total = header.get("mem_total_kb", 0) * 1024
        self.snippet: List[str] = []


def _tw_overflow(r: _Recording) -> List[dict]:
    if not r.fam.get("tw_overflow"):
        return []
    n = r.fam["tw_overflow"]
    tw = r.peaks.get("tw", {})
    at_start = r.lim.get("tcp_max_tw_buckets")
    in_force = r.during.get("tcp_max_tw_buckets", tw.get("limit"))
    limit = in_force if in_force is not None else at_start
    was_lowered = lowered(at_start, in_force)
    ports = r.m["top"]["local_ports"]
    peers = r.m["top"]["remote_peers"]
    peak = int(tw.get("value") or 0)
    advice = [
        f"{TW_WHO}. "
        f"Top local ports: {', '.join(str(p['port']) for p in ports[:3]) or '?'}; "
        f"top peers: {', '.join(p['peer'] for p in peers[:3]) or '?'}.",
    ] + TW_ADVICE
    new_limit = raise_only(tw_buckets_for(peak), at_start) if peak else None
    if was_lowered:
        advice.insert(0, f"net.ipv4.tcp_max_tw_buckets was {in_force} when the overflows happened but "
                         f"{at_start} at the start of the recording"
                         + (", which covers twice the peak" if new_limit is None else "")
                         + ": find what lowered it (it is set per network namespace) before "
                           "tuning anything else.")
    if new_limit is not None:
        advice.append(tw_raise(new_limit, f"twice the peak of {peak}"))
        r.snippet.append(sysctl_line("tcp_max_tw_buckets", new_limit))
    r.snippet.append("net.ipv4.tcp_tw_reuse = 1")
    return [{
        "id": "tw_overflow", "severity": "warning",
        "title": f"TIME_WAIT table full: {n} connections closed without TIME_WAIT",
        "evidence": [f"{n} overflows; TIME_WAIT count {tw.get('value')} against "
                     f"tcp_max_tw_buckets {limit} in force then"
                     + (f", {at_start} at the start" if was_lowered else "")
                     + " (per network namespace since 4.11)",
                     TW_SILENT],
        "advice": advice,
        "why": TW_WHY,
    }]


def _orphans(r: _Recording) -> List[dict]:
    if not r.oom.get("too_many_orphans"):
        return []
    n = r.oom["too_many_orphans"]
    po = r.peaks.get("orphans", {})
    ps = r.peaks.get("orphans_shifted", {})
    max_orphans = r.lim.get("tcp_max_orphans")
    in_force = r.during.get("tcp_max_orphans")
    peak = max(po.get("value") or 0, ps.get("orphans") or 0)
    shifts = r.m["distributions"]["shift"]
    top_shift = max((int(k) for k in shifts), default=0)
    raised = raise_only(max_orphans_for(peak), max_orphans)
    want = raised if raised is not None else int(max_orphans or 0)
    mem_note = ""
    if r.mem_total:
        mem_note = (f" At {want} orphans x 64 KiB that is up to {_mib(want * ORPHAN_COST)} "
                    f"of this host's {_mib(r.mem_total)}.")
    advice = []
    if lowered(max_orphans, in_force):
        advice.append(
            f"net.ipv4.tcp_max_orphans was {in_force} when the sockets were killed but is {max_orphans} "
            f"outside that moment" + (f", which covers four times the peak ({peak * 4})" if raised is None
                                      else "") + ": find what lowered it.")
    if raised is not None:
        advice.append(f"{orphans_raise(want)}.{mem_note}")
    elif not advice:
        advice.append(f"net.ipv4.tcp_max_orphans {max_orphans} already covers four times the "
                      f"peak ({peak * 4}).")
    if raised is not None:
        r.snippet.append(sysctl_line("tcp_max_orphans", raised))
    return [{
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
            "callers: " + (", ".join(f"{k} {v}" for k, v in r.m["events"]["oom_callers"].items()) or "?"),
        ],
        "advice": advice + [ORPHANS_CAUSE.format(where=" (see the holders)")],
        "why": "An orphan belongs to no process; the kernel bounds them by count and kills the "
               "excess with a reset, so peers see connection resets mid-transfer.",
    }]


def _mib_exact(n_bytes: int) -> str:
    return f"{n_bytes / (1 << 20):.1f} MiB"


def _classes(r: _Recording) -> dict:
    return (r.m.get("mem_exceed") or {}).get("classes") or {}


def _memcg(r: _Recording) -> List[dict]:
    """Memory cgroups that refused socket memory (issue 13, finding 4): the kernel
    charges the socket's memory cgroup before it compares anything with tcp_mem, so
    the advice is that cgroup's limit, never tcp_mem."""
    classes = _classes(r)
    out = []
    for row in (r.m.get("mem_exceed") or {}).get("memcgs") or []:
        where = row.get("memcg") or "an unresolved memory cgroup"
        name = row.get("limit_name") or "memory.max"
        limit = row.get("limit_bytes")
        who = f" ({row['container']})" if row.get("container") and row["container"] != where else ""
        out.append({
            "id": "mem_exceed.memcg", "severity": "critical",
            "title": f"Memory cgroup {where}{who} refused socket memory: {row['refusals']} refusals",
            "limit": f"{name} of {where}",
            "evidence": [f"{row['refusals']} refusals classified memcg (the cgroup's charge failed)"
                         + (f"; {name} = {_mib_exact(limit)}" if limit else ""),
                         "refusals by class: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))],
            "advice": [f"Raise {name} of {where}" + (f" (now {_mib_exact(limit)})" if limit else "")
                       + ", or find what fills it: the sockets of that cgroup that do not drain "
                         "(`tcpoom trace --cgroup " + where + "`).",
                       "Do not raise net.ipv4.tcp_mem for these: the kernel refuses the cgroup's charge "
                       "before it compares the host's TCP memory with tcp_mem."],
            "why": "__sk_mem_raise_allocated charges the socket's memory cgroup first; when that charge "
                   "fails the allocation is refused whatever tcp_mem says.",
        })
    return out


def _drops(r: _Recording) -> dict:
    return r.m.get("mem_drop") or {"sites": {}, "causes": {}}


def _drop_evidence(d: dict) -> List[str]:
    return ["drops by site: " + ", ".join(f"{k} {v}" for k, v in sorted(d["sites"].items())),
            "drops by cause: " + ", ".join(f"{k} {v}" for k, v in sorted(d["causes"].items()))]


def _mem_drop(r: _Recording) -> List[dict]:
    """Received segments dropped at a full receive buffer (the refusals of
    tcp_mem or a memory cgroup are advised by _tcp_mem and _memcg)."""
    d = _drops(r)
    full = d["causes"].get("rcvbuf", 0)
    memcg = d["causes"].get("memcg", 0)
    out = []
    if full:
        rmem = (r.lim.get("tcp_rmem") or ["?"] * 3)[2]
        ports = r.m["top"]["local_ports"]
        owners = r.m["top"]["processes"]
        out.append({
            "id": "mem_drop.rcvbuf", "severity": "warning",
            "title": f"{full} received segments dropped at a full receive buffer",
            "evidence": _drop_evidence(d) + [
                "top owners: " + (", ".join(f"{p['comm']}[{p['pid']}]" for p in owners[:3]) or "?")
                + "; top local ports: " + (", ".join(str(p["port"]) for p in ports[:3]) or "?")],
            "advice": [
                "The reader is the cause: these sockets held more than their receive buffer "
                "(rmem_alloc above sk_rcvbuf). Find why the application does not read (blocked, "
                "too slow, or reading another socket first).",
                "An application that sets SO_RCVBUF turns the kernel's autotuning off for that "
                "socket and is capped by net.core.rmem_max: let it autotune, or give it a larger "
                "buffer. Otherwise autotuning grows it up to tcp_rmem[2] "
                f"({rmem} bytes): raise tcp_rmem[2] only if the readers keep up and the drops go on.",
                "Do not raise tcp_mem for these: no charge was refused."],
            "why": "tcp_try_rmem_schedule fails when rmem_alloc is above sk_rcvbuf and pruning "
                   "(collapsing the queue) cannot bring it under; tcp_data_queue then drops the "
                   "segment with SKB_DROP_REASON_PROTO_MEM (TcpExt TCPRcvQDrop or TCPOFODrop) and the "
                   "peer has to retransmit.",
        })
    if memcg:
        out.append({
            "id": "mem_drop.memcg", "severity": "critical",
            "title": f"{memcg} received segments dropped: a memory cgroup refused the charge",
            "evidence": _drop_evidence(d),
            "advice": ["Raise the memory limit (memory.max, or v1 memory.kmem.tcp.limit_in_bytes) of "
                       "the receiving sockets' cgroup, or find what fills it; not tcp_mem."],
            "why": "The socket's memory cgroup is charged before tcp_mem is compared; a failed "
                   "charge refuses the receive buffer and the segment is dropped.",
        })
    return out


def _tcp_mem(r: _Recording) -> List[dict]:
    classes = _classes(r)
    by_memcg = classes.get("memcg", 0)
    drops = _drops(r)["causes"]
    dropped = drops.get("hard_limit", 0) + drops.get("fair_share", 0)
    # memory-cgroup refusals are counted under their cgroup (_memcg), not here;
    # received segments dropped at the limit are refusals too
    hard = r.oom.get("out_of_memory", 0) + r.fam.get("mem_exceed", 0) - by_memcg + dropped
    pressure = r.fam.get("pressure", 0)
    if not (hard or pressure):
        return []
    lim, page, mem_total = r.lim, r.page, r.mem_total
    tm = lim.get("tcp_mem") or [0, 0, 0]
    pm = r.peaks.get("memory_pages", {})
    peak_pages = pm.get("value") or 0
    holders = r.m["holders"]["processes"]
    slow = ", ".join(f"{h['comm']} ({_mib(h['max_bytes'])})" for h in holders[:3])
    in_force = r.during.get("tcp_mem_high")
    over = r.peaks.get("memory_over")
    was_lowered = lowered(tm[2], in_force)
    new = raise_only(tcp_mem_for(peak_pages), tm) if peak_pages else None
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
        advice.append(f"{tcp_mem_raise(new, page)} ({_mib(new[2] * page)} at the hard limit)"
                      + (f"; this host has {_mib(mem_total)}." if mem_total else "."))
        r.snippet.append(sysctl_line("tcp_mem", new))
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
    if dropped:
        evidence.append(f"{dropped} received segments dropped at the limit (mem_drop: hard_limit "
                        f"{drops.get('hard_limit', 0)}, fair_share {drops.get('fair_share', 0)})")
    if set(classes) - {"unclassified"}:
        evidence.append("refusals by class: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
                        + (" (memory-cgroup refusals are counted under their cgroup, not here)"
                           if by_memcg else ""))
    return [{
        "id": "tcp_mem", "severity": "critical" if hard else "warning",
        "title": (f"TCP memory at the hard limit: {hard} refusals or aborts" if hard
                  else f"TCP memory pressure entered {pressure} times"),
        "evidence": evidence,
        "advice": advice,
        "why": "Above tcp_mem[1] TCP shrinks buffers for everyone; above tcp_mem[2] every new "
               "allocation is refused: sends stall, received data is dropped, orphans are killed.",
    }]


def _loss(r: _Recording) -> List[dict]:
    lost = sum(r.m["loss"].values())
    if not lost:
        return []
    return [{"id": "loss", "severity": "warning",
             "title": f"{lost} events lost in the ring buffer",
             "evidence": ["per family: " + ", ".join(f"{k} {v}" for k, v in r.m["loss"].items())],
             "advice": ["Record again with a larger --ringbuf-size; the counts stay exact "
                        "(in-kernel counters), only per-event detail was lost."],
             "why": "The ring buffer was full when the kernel side wanted to write."}]


def _missed(r: _Recording) -> List[dict]:
    missed = r.m.get("missed") or {}
    total = sum(missed.values())
    if not total:
        return []
    return [{"id": "missed", "severity": "warning",
             "title": f"{total} calls the probes did not see (the kernel's own miss counts)",
             "evidence": ["per family: " + ", ".join(f"{k} {v}" for k, v in missed.items())],
             "advice": ["These are neither counted nor detailed: compare the family's count "
                        "with its TcpExt counter; fentry/fexit (5.5+ with BTF) misses least."],
             "why": "A BPF program does not run while it (or, for kprobes, another kprobe "
                    "program) is already running on that CPU, and kprobes do not nest; the "
                    "kernel counts both (recursion_misses, kprobe missed), and the kprobe "
                    "tiers count a return whose entry was taken by a nested call."}]


def _fidelity(r: _Recording) -> List[dict]:
    sampled = sorted({f"{fam}.{k}" for fam, p in r.m["plan"].items()
                      for k, v in p["fields"].items() if v == "sampled"})
    if not sampled:
        return []
    return [{"id": "fidelity", "severity": "info",
             "title": "Some figures were sampled from /proc, not read at the decision",
             "evidence": sampled,
             "advice": ["A kernel with kprobes or fentry and full kallsyms gives them exactly "
                        "(`tcpoom probes` on that host says so)."],
             "why": "This kernel does not let BPF read those values at the moment of the event."}]


#: one function a finding, in the order they are written down
FINDINGS = (_tw_overflow, _orphans, _memcg, _tcp_mem, _mem_drop, _loss, _missed, _fidelity)


def diagnose(m: dict, header: dict) -> Tuple[List[dict], str]:
    r = _Recording(m, header)
    findings = [f for rule in FINDINGS for f in rule(r)]
    if not any(f["severity"] in ("critical", "warning") for f in findings):
        findings.insert(0, {"id": "healthy", "severity": "ok",
                            "title": "No TCP socket-memory limit was hit while recording",
                            "evidence": [], "advice": [], "why": ""})
    # the worst first, in every format (all of them render this order)
    findings.sort(key=lambda f: SEVERITY_ORDER.index(f["severity"]))
    text = ""
    if r.snippet:
        text = ("# /etc/sysctl.d/90-tcpoom.conf - sized from this recording; apply with `sysctl --system`\n"
                + "\n".join(dict.fromkeys(r.snippet)) + "\n")
    return findings, text
