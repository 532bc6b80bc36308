"""The doctor's rules: live /proc figures in, findings out. Pure: nothing here reads the
host, so every rule can be tested with made-up figures (tests/test_doctor.py).

The reasoning is the one docs/design.md "Diagnosis" asks of reports (see tracer/analysis/diagnosis.py,
which applies it to recordings), applied to what /proc shows right now:
- tcp_mem and sockstat `mem` are both in pages: compare pages with pages, show bytes too;
- orphans are compared `orphans << shift` with tcp_max_orphans, shift 0..2 on the timer
  path, so a host is in trouble long before orphans reach the limit;
- TIME_WAIT is bounded per network namespace (4.11+) and its overflow is silent;
- per-socket buffer maxima times sockets is the worst case tcp_mem has to absorb;
- slow consumers are the usual root cause: raising limits only delays them.

Severities: "critical" (the kernel is refusing memory or killing connections now),
"warning" (a limit is reached, or will be for some sockets), "info" (context, a risk),
"ok" (the healthy note). The verdict is the worst of them, info counting as ok, and the
exit code is 2, 1 or 0 for critical, warning or ok.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from tracer.model.units import margin_text

from . import doctor_counters
from .doctor_figures import (COUNTERS, SLOW_CONSUMERS, Figures, counter_table, finding,
                           kernel_default_tcp_mem, pages, pct, size, worst_cases)
from .sizing import (ORPHAN_COST, ORPHANS_CAUSE, TW_ADVICE, TW_SILENT, TW_WHO, TW_WHY,
                     max_orphans_for, orphans_raise, raise_only, sysctl_line, tcp_mem_for,
                     tcp_mem_raise, tw_buckets_for, tw_raise)

__all__ = ["COUNTERS", "Diagnosis", "Figures", "counter_table", "diagnose",
           "kernel_default_tcp_mem", "size", "worst_cases"]

TIME_WAIT_S = 60           # TCP_TIMEWAIT_LEN: how long a TIME_WAIT socket holds its bucket

SEVERITIES = ("ok", "info", "warning", "critical")
EXIT_CODES = {"ok": 0, "info": 0, "warning": 1, "critical": 2}


@dataclasses.dataclass
class Diagnosis:
    findings: List[dict]
    snippet: str          # an /etc/sysctl.d/ file, "" when no sysctl change is advised
    severity: str         # "ok", "warning" or "critical": the worst finding's (info is ok)
    not_checked: List[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.severity]


# ------------------------------------------------------------------------------ rules

def _tcp_mem(fig: Figures, snippet: List[str]) -> List[dict]:
    tm, mem, page = fig.tcp_mem, fig.mem_pages, fig.page_size
    if tm is None or mem is None:
        return []
    low, pressure, high = tm
    evidence = [f"TCP memory {pages(mem, page)} against tcp_mem {low}/{pressure}/{high} pages "
                f"= {size(low * page)}/{size(pressure * page)}/{size(high * page)} "
                f"(low/pressure/high)",
                "tcp_mem is in pages of {} bytes, not bytes, like sockstat 'mem': "
                "compare pages with pages".format(page)]
    if fig.mem_margin:
        evidence.append("sockstat mem is the global figure: TCP really holds it "
                        + margin_text(fig.mem_margin, page))
    if fig.pressure is not None:
        evidence.append(f"memory-pressure flag (/proc/net/protocols TCP press): "
                        f"{'yes' if fig.pressure else 'no'}")
    # __sk_mem_raise_allocated(): above tcp_mem[2] new charges are refused (short of the
    # per-socket minimum tcp_rmem[0]/tcp_wmem[0]); above tcp_mem[1] TCP enters pressure
    # and shrinks everybody's buffers. Pressure is left only when some socket frees memory
    # while the total is below tcp_mem[0] (__sk_mem_reduce_allocated).
    if mem > high:
        severity, limit = "critical", "net.ipv4.tcp_mem[2]"
        title = (f"TCP memory above the hard limit: {mem} pages > tcp_mem[2] {high} "
                 f"({pct(mem, high)}): new socket memory is refused")
    elif mem > pressure:
        severity, limit = "warning", "net.ipv4.tcp_mem[1]"
        title = (f"TCP memory above the pressure threshold: {mem} pages > tcp_mem[1] "
                 f"{pressure}: buffers are being shrunk")
    elif fig.pressure:
        severity, limit = "warning", "net.ipv4.tcp_mem[1]"
        where = ("still above tcp_mem[0]" if mem >= low
                 else "already below tcp_mem[0]: it ends when the next socket frees memory")
        title = f"TCP is in memory-pressure mode ({mem} pages, {where})"
    elif mem * 10 >= pressure * 8 and pressure > 0:
        return [finding("tcp_mem", "info", f"TCP memory at {pct(mem, pressure)} of the "
                         f"pressure threshold tcp_mem[1]", "net.ipv4.tcp_mem[1]", evidence,
                         [SLOW_CONSUMERS],
                         "Above tcp_mem[1] TCP enters memory pressure and shrinks every "
                         "socket's buffers.")]
    else:
        return []
    advice = [SLOW_CONSUMERS]
    why = ("Above tcp_mem[1] TCP shrinks buffers for every socket; above tcp_mem[2] every "
           "new allocation is refused: sends stall, received data is dropped "
           "(TCPRcvQDrop, RcvPruned), and orphans holding data are killed (TCPAbortOnMemory).")
    default = kernel_default_tcp_mem(fig.mem_total, page) if fig.mem_total else None
    lowered = bool(default and high * 2 < default[2])
    if lowered:
        evidence.append(f"tcp_mem[2] is less than half the kernel's own default for "
                        f"{size(fig.mem_total)} of memory (about {default[0]} {default[1]} "
                        f"{default[2]} pages)")
        advice.insert(0, "tcp_mem was lowered far below the kernel's default: find what set it "
                         "(grep -r tcp_mem /etc/sysctl.conf /etc/sysctl.d /run/sysctl.d "
                         "/usr/lib/sysctl.d, container or orchestration settings) before "
                         "tuning anything else.")
    # Size from what is in use now, with room: 1.5x the current total at the hard limit,
    # and never below what is set or (when lowered) the kernel's default.
    new = raise_only(tcp_mem_for(mem, at_least=max(high, default[2] if lowered else 0)), tm)
    if new is not None:
        new_high = new[2]
        share = (f"; that is {pct(new_high * page, fig.mem_total)} of this host's "
                 f"{size(fig.mem_total)}" if fig.mem_total else "")
        advice.append(f"{tcp_mem_raise(new, page)} ({size(new_high * page)} at the hard limit{share}).")
        snippet.append(sysctl_line("tcp_mem", new))
    return [finding("tcp_mem", severity, title, limit, evidence, advice, why)]


def _orphans(fig: Figures, snippet: List[str]) -> List[dict]:
    n, limit = fig.orphans, fig.tcp_max_orphans
    if n is None or limit is None:
        return []
    # tcp_too_many_orphans(shift) is `orphans << shift > tcp_max_orphans`. The close path
    # asks with shift 0; tcp_out_of_resources() (an orphan's retransmission or probe
    # timer) adds 1 when the socket looks abandoned (nothing sent for 2*TCP_RTO_MAX, or
    # retries exhausted) and 1 more on a soft error: so orphans above max/2 already kill
    # some sockets, and above max/4 the most stuck ones.
    if n > limit:
        severity, shift = "critical", 0
        title = (f"Too many orphaned sockets: {n} > tcp_max_orphans {limit}: every close that "
                 f"leaves an orphan is reset (TCPAbortOnMemory)")
    elif n << 1 > limit:
        severity, shift = "warning", 1
        title = (f"Orphans at {pct(n, limit)} of tcp_max_orphans: with the timer path's "
                 f"penalty ({n} << 1 = {n << 1} > {limit}) orphans are being killed")
    elif n << 2 > limit:
        severity, shift = "warning", 2
        title = (f"Orphans at {pct(n, limit)} of tcp_max_orphans: with the full penalty "
                 f"({n} << 2 = {n << 2} > {limit}) stuck orphans are being killed")
    else:
        return []
    evidence = [f"{n} orphans (sockstat, host-wide) against tcp_max_orphans {limit} "
                f"(host-wide); thresholds: {limit} at shift 0 (close path), {limit >> 1} at "
                f"shift 1, {limit >> 2} at shift 2 (timer path)",
                "on 5.16+ the kernel compares a copy of the count refreshed every 100 ms "
                "(tcp_orphan_cache); sockstat shows the exact sum"]
    want = max_orphans_for(n)
    cap = None
    if fig.mem_total:
        # Never advise more orphans than half the memory could hold at 64 KiB each.
        cap = max((fig.mem_total // 2 // ORPHAN_COST) // 1024 * 1024, 1024)
        want = min(want, cap)
    advice = []
    if want > limit:
        cost = f" (up to {size(want * ORPHAN_COST)} of unswappable memory at 64 KiB an orphan"
        cost += f", of this host's {size(fig.mem_total)})" if fig.mem_total else ")"
        advice.append(f"{orphans_raise(want)}{cost}."
                      + (" That is capped at half of memory: fix the cause rather than raise "
                         "it further." if cap is not None and want == cap else ""))
        snippet.append(sysctl_line("tcp_max_orphans", want))
    elif cap is not None and cap <= limit and n * 4 > limit:
        advice.append(f"Raising net.ipv4.tcp_max_orphans is not the fix here: {limit} orphans "
                      f"at 64 KiB each may already pin {size(limit * ORPHAN_COST)} of this "
                      f"host's {size(fig.mem_total)}; end the orphans sooner instead.")
    advice.append(ORPHANS_CAUSE.format(where=""))
    return [finding("orphans", severity, title, "net.ipv4.tcp_max_orphans", evidence, advice,
                     "An orphan belongs to no process; the kernel bounds them by count and "
                     "kills the excess with a reset, so peers see connections reset "
                     "mid-transfer." + (f" This one is killed only at shift >= {shift}."
                                        if shift else ""))]


def _time_wait(fig: Figures, snippet: List[str], deltas: Dict[str, Optional[int]]) -> List[dict]:
    tw, limit = fig.tw, fig.tcp_max_tw_buckets
    if tw is None or limit is None:
        return []
    where = "this namespace" if fig.own_netns else f"namespace {fig.netns_label}"
    # inet_twsk_alloc() refuses a bucket when `tw_count >= tcp_max_tw_buckets` (5.19+:
    # tw_refcount - 1, the figure sockstat prints): the connection is then closed without
    # TIME_WAIT, TCPTimeWaitOverflow counts it, and nothing is logged since 2.6.37.
    if tw >= limit:
        severity = "warning"
        title = (f"TIME_WAIT table full in {where}: {tw} >= tcp_max_tw_buckets {limit}: "
                 f"connections close without TIME_WAIT")
    elif tw * 10 >= limit * 8:
        return [finding("time_wait", "info", f"TIME_WAIT at {pct(tw, limit)} of "
                         f"tcp_max_tw_buckets in {where}", "net.ipv4.tcp_max_tw_buckets",
                         [f"{tw} TIME_WAIT sockets against tcp_max_tw_buckets {limit} "
                          f"(per network namespace since 4.11)"])]
    else:
        return []
    overflow = deltas.get("TCPTimeWaitOverflow")
    evidence = [f"{tw} TIME_WAIT sockets against tcp_max_tw_buckets {limit} "
                f"(per network namespace since 4.11)",
                TW_SILENT]
    # Demand: what holds a bucket now plus what was refused, per TIME_WAIT lifetime.
    demand = tw
    if overflow and fig.interval_s > 0:
        evidence.append(f"TCPTimeWaitOverflow +{overflow} in {fig.interval_s:g} s")
        demand += int(overflow * TIME_WAIT_S / fig.interval_s)
    new_limit = tw_buckets_for(demand)
    advice = [f"{TW_WHO} (`ss -tan state time-wait` shows the ports and peers)."] + TW_ADVICE
    if new_limit > limit:
        advice.append(tw_raise(new_limit, f"twice the demand of about {demand} per {TIME_WAIT_S} s"))
        snippet.append(sysctl_line("tcp_max_tw_buckets", new_limit))
    if fig.tcp_tw_reuse != 1:
        snippet.append("net.ipv4.tcp_tw_reuse = 1")
    if not fig.own_netns:
        advice.append(f"Both are per network namespace: /etc/sysctl.d sets the initial one; for "
                      f"{fig.netns_label} set them inside it (`ip netns exec NAME sysctl -w`, or "
                      f"the container's sysctl settings).")
    return [finding("time_wait", severity, title, "net.ipv4.tcp_max_tw_buckets", evidence,
                     advice, TW_WHY)]


def _memcg(fig: Figures) -> List[dict]:
    """A memory cgroup at its limit refuses socket memory before tcp_mem is even looked at
    (__sk_mem_raise_allocated charges the memcg first, 4.19-6.18): raising tcp_mem does not
    help those sockets; the cgroup's own limit, or its memory user, is the lever."""
    out = []
    for m in fig.memcgs or []:
        limit, sock = m.get("limit"), m.get("sock") or 0
        if not limit:
            continue
        used = sock if m["version"] == "v1" else (m.get("usage") or 0)
        pct = 100.0 * used / limit
        failed = m.get("failcnt") or 0
        if pct < 80 and not failed:
            continue
        severity = "critical" if pct >= 95 or failed else "warning"
        what = "socket memory" if m["version"] == "v1" else "memory (sockets included)"
        evidence = [f"{what} {size(used)} of {m['limit_name']} {size(limit)} ({pct:.0f}%)"
                    + (f"; sockets {size(sock)}" if m["version"] == "v2" else "")]
        if failed:
            evidence.append(f"memory.kmem.tcp.failcnt {failed}: charges this cgroup refused")
        if m["version"] == "v2" and m.get("max_events"):
            evidence.append(f"memory.events max {m['max_events']}, oom {m.get('oom_events') or 0}, "
                            f"oom_kill {m.get('oom_kills') or 0} (since the cgroup was made): a refused "
                            "send runs the cgroup's OOM killer once; a receive is charged past memory.max")
        if m["version"] == "v2" and used > limit:
            evidence.append(f"{size(used - limit)} above memory.max: charges forced past it, as the kernel "
                            "does for socket receives in softirq (6.1+); the cgroup's next allocations "
                            "reclaim or meet its OOM killer")
        if m.get("peak"):
            evidence.append(f"peak {size(m['peak'])}")
        out.append(finding(
            "memcg", severity, f"Memory cgroup {m['path']} is at its socket-memory limit",
            f"{m['limit_name']} of {m['path']}", evidence,
            [f"Raise {m['limit_name']} of {m['path']} (or the container's memory limit), or find "
             f"the socket user in that cgroup: `tcpoom trace --cgroup {m['path']}` names it.",
             "Raising net.ipv4.tcp_mem does not help: the kernel refuses the charge in the "
             "cgroup before it compares the host's TCP memory with tcp_mem."],
            "The kernel charges socket memory to the socket's memory cgroup first; when that "
            "charge fails the allocation is refused (send) or the data dropped (receive)."))
    return out


def diagnose(fig: Figures) -> Diagnosis:
    snippet: List[str] = []
    table = counter_table(fig)
    deltas = {k: v["delta"] for k, v in table.items()}
    worst = worst_cases(fig)
    findings = (_tcp_mem(fig, snippet) + _orphans(fig, snippet)
                + _time_wait(fig, snippet, deltas) + doctor_counters.counters(fig, table)
                + doctor_counters.buffers(fig, worst) + doctor_counters.orphan_memory(fig, worst)
                + _memcg(fig))
    not_checked = []
    if fig.tcp_mem is None or fig.mem_pages is None:
        not_checked.append("tcp_mem: needs sockstat mem and net.ipv4.tcp_mem")
    if fig.orphans is None or fig.tcp_max_orphans is None:
        not_checked.append("orphans: needs sockstat orphan and net.ipv4.tcp_max_orphans")
    if fig.tw is None or fig.tcp_max_tw_buckets is None:
        not_checked.append("time_wait: needs the namespace's sockstat tw and "
                           "net.ipv4.tcp_max_tw_buckets")
    if fig.counters_after is None:
        not_checked.append("counters: needs the namespace's /proc/net/netstat")
    if worst["buffer_bytes"] is None:
        not_checked.append("buffer worst case: needs sockstat alloc, tcp_rmem, tcp_wmem, tcp_mem")
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    findings.sort(key=lambda f: order[f["severity"]])   # stable: rule order within a level
    severity = max((f["severity"] for f in findings), key=SEVERITIES.index, default="ok")
    if severity in ("ok", "info"):
        # Info findings are context (history, overcommit): the verdict is still healthy.
        findings.insert(0, finding("healthy", "ok",
                                    "No TCP socket-memory limit is reached or near", None))
        severity = "ok"
    text = ""
    if snippet:
        text = ("# /etc/sysctl.d/90-tcpoom.conf - sized from the figures read now\n"
                "# apply with: sysctl --system\n" + "\n".join(dict.fromkeys(snippet)) + "\n")
    return Diagnosis(findings, text, severity, not_checked)
