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
from typing import Dict, List, Optional, Tuple

ORPHAN_COST = 64 * 1024    # ip-sysctl.rst: "each orphan eats up to ~64K of unswappable memory"
TIME_WAIT_S = 60           # TCP_TIMEWAIT_LEN: how long a TIME_WAIT socket holds its bucket

SEVERITIES = ("ok", "info", "warning", "critical")
EXIT_CODES = {"ok": 0, "info": 0, "warning": 1, "critical": 2}

# TcpExt counters shown with their totals and deltas (all per network namespace).
COUNTERS = (
    "TCPAbortOnMemory",          # tcp_check_oom() killed an orphan: too many, or tcp_mem[2]
    "TCPTimeWaitOverflow",       # no TIME_WAIT bucket: the connection closed without one
    "TCPMemoryPressures",        # entries into memory pressure (tcp_mem[1] crossed)
    "TCPMemoryPressuresChrono",  # ms spent under pressure, added when pressure is left
    "PruneCalled",               # a receive queue over budget was collapsed
    "RcvPruned",                 # ... and collapsing did not free enough: segment dropped
    "OfoPruned",                 # out-of-order queue thrown away to make room
    "TCPRcvQDrop",               # in-order segment dropped: receive memory refused
    "TCPOFODrop",                # out-of-order segment dropped: receive memory refused
    "TCPAbortOnTimeout",         # a connection (often an orphan) gave up on its retries
)
# Dropped received data: the per-socket budget (rcvbuf) or tcp_mem refused the memory.
_DROPS = ("RcvPruned", "OfoPruned", "TCPRcvQDrop", "TCPOFODrop")
# Counters whose history (total, not delta) is worth a line when they did not move now.
_HISTORY = ("TCPAbortOnMemory", "TCPTimeWaitOverflow", "TCPMemoryPressures") + _DROPS

Triple = Tuple[int, int, int]


@dataclasses.dataclass
class Figures:
    """What the doctor judges. None means "could not be read" (the rule is then skipped).

    From /proc/net/sockstat of the chosen namespace: `inuse` and `tw` are per namespace,
    `orphans`, `alloc` and `mem_pages` host-wide; `inuse6` is from sockstat6.
    """
    page_size: int = 4096
    inuse: Optional[int] = None
    inuse6: Optional[int] = None
    orphans: Optional[int] = None
    tw: Optional[int] = None
    alloc: Optional[int] = None
    mem_pages: Optional[int] = None
    pressure: Optional[bool] = None         # /proc/net/protocols TCP "press"
    tcp_mem: Optional[Triple] = None        # pages, host-wide
    tcp_max_orphans: Optional[int] = None   # host-wide
    tcp_max_tw_buckets: Optional[int] = None  # per namespace (4.11+)
    tcp_rmem: Optional[Triple] = None       # bytes, per namespace (4.15+)
    tcp_wmem: Optional[Triple] = None
    tcp_tw_reuse: Optional[int] = None      # per namespace
    mem_total: Optional[int] = None         # bytes, /proc/meminfo MemTotal
    #: 6.0+: pages each side of mem_pages that per-CPU reserves may hold (host/pcpu_margin.py)
    mem_margin: Optional[dict] = None
    counters_before: Optional[Dict[str, int]] = None
    counters_after: Optional[Dict[str, int]] = None
    interval_s: float = 1.0
    own_netns: bool = True                  # the caller's namespace (sysctl.d reaches it?)
    netns_label: str = ""                   # how the namespace was named, for advice


@dataclasses.dataclass
class Diagnosis:
    findings: List[dict]
    snippet: str          # an /etc/sysctl.d/ file, "" when no sysctl change is advised
    severity: str         # "ok", "warning" or "critical": the worst finding's (info is ok)
    not_checked: List[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.severity]


# ---------------------------------------------------------------------------- helpers

def size(n_bytes: float) -> str:
    """Bytes for people: 512 B, 64 KiB, 2.2 GiB."""
    n = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _round_up(n: int, step: int) -> int:
    return ((max(int(n), 1) + step - 1) // step) * step


def _pct(value: float, limit: float) -> str:
    if not limit:
        return "limit 0"
    return f"{100.0 * value / limit:.0f}%"


def margin_text(m: Optional[dict], page: int) -> str:
    """The per-CPU margin of the global TCP memory figure (6.0+; tracer/host/pcpu_margin.py
    reads it), in one line for doctor and reports."""
    if not m:
        return "exact (no per-CPU reserve before 6.0)"
    return (f"± {m['pages']} pages ({size(m['pages'] * page)}): {m['cpus']} CPUs x {m['rsv_pages']} "
            f"pages each may sit in per-CPU reserves, outside the global figure ({m['source']})")


def _pages(n: int, page: int) -> str:
    return f"{n} pages ({size(n * page)})"


def kernel_default_tcp_mem(mem_total: int, page_size: int) -> Triple:
    """About what tcp_init_mem() sets at boot on a host with this much memory.

    The kernel uses nr_free_buffer_pages()/16, a little below MemTotal in pages (it
    leaves out the zones' high watermarks), so this is an estimate within ~1%.
    """
    limit = max((mem_total // page_size) // 16, 128)
    low = limit // 4 * 3
    return low, limit, low * 2


def counter_table(fig: Figures) -> Dict[str, dict]:
    """{counter: {"total": n or None, "delta": d or None}} for COUNTERS."""
    out = {}
    for name in COUNTERS:
        after = (fig.counters_after or {}).get(name)
        before = (fig.counters_before or {}).get(name)
        if after is None and fig.counters_after is None:
            after = before
        delta = after - before if after is not None and before is not None else None
        out[name] = {"total": after, "delta": delta}
    return out


def worst_cases(fig: Figures) -> dict:
    """The two worst cases an expert multiplies out; None where a figure is missing."""
    out = {"sockets": None, "buffer_bytes": None, "tcp_mem_high_bytes": None,
           "orphan_bytes": None, "mem_total_bytes": fig.mem_total}
    # alloc counts every TCP socket of the host (IPv4 and IPv6, orphans included): the
    # population tcp_mem, a host-wide limit, has to cover. inuse is only this namespace.
    sockets = fig.alloc
    if sockets is None and fig.inuse is not None:
        sockets = fig.inuse + (fig.inuse6 or 0)
    out["sockets"] = sockets
    if sockets is not None and fig.tcp_rmem and fig.tcp_wmem:
        out["buffer_bytes"] = sockets * (fig.tcp_rmem[2] + fig.tcp_wmem[2])
    if fig.tcp_mem:
        out["tcp_mem_high_bytes"] = fig.tcp_mem[2] * fig.page_size
    if fig.tcp_max_orphans is not None:
        out["orphan_bytes"] = fig.tcp_max_orphans * ORPHAN_COST
    return out


def _finding(id_: str, severity: str, title: str, limit: Optional[str] = None,
             evidence=(), advice=(), why: str = "") -> dict:
    return {"id": id_, "severity": severity, "limit": limit, "title": title,
            "evidence": list(evidence), "advice": list(advice), "why": why}


_SLOW_CONSUMERS = ("Look for slow consumers first: `ss -tmp` lists each socket's queues "
                   "(skmem r = receive, t = send); sockets whose queues stay large belong to "
                   "a reader that stopped or a peer that stopped acknowledging. They are the "
                   "usual root cause, and raising limits only delays them. `tcpoom trace` "
                   "shows every refusal with the sockets holding the most memory.")


# ------------------------------------------------------------------------------ rules

def _tcp_mem(fig: Figures, snippet: List[str]) -> List[dict]:
    tm, mem, page = fig.tcp_mem, fig.mem_pages, fig.page_size
    if tm is None or mem is None:
        return []
    low, pressure, high = tm
    evidence = [f"TCP memory {_pages(mem, page)} against tcp_mem {low}/{pressure}/{high} pages "
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
                 f"({_pct(mem, high)}): new socket memory is refused")
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
        return [_finding("tcp_mem", "info", f"TCP memory at {_pct(mem, pressure)} of the "
                         f"pressure threshold tcp_mem[1]", "net.ipv4.tcp_mem[1]", evidence,
                         [_SLOW_CONSUMERS],
                         "Above tcp_mem[1] TCP enters memory pressure and shrinks every "
                         "socket's buffers.")]
    else:
        return []
    advice = [_SLOW_CONSUMERS]
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
    new_high = max(high, _round_up(mem * 3 // 2, 256), default[2] if lowered else 0)
    new = (max(low, new_high // 2), max(pressure, new_high * 3 // 4), new_high)
    if new != tuple(tm):
        share = (f"; that is {_pct(new_high * page, fig.mem_total)} of this host's "
                 f"{size(fig.mem_total)}" if fig.mem_total else "")
        advice.append(f"If the memory is really needed, raise net.ipv4.tcp_mem - in PAGES of "
                      f"{page} bytes, not bytes - to about {new[0]} {new[1]} {new[2]} "
                      f"({size(new_high * page)} at the hard limit{share}).")
        snippet.append(f"net.ipv4.tcp_mem = {new[0]} {new[1]} {new[2]}")
    return [_finding("tcp_mem", severity, title, limit, evidence, advice, why)]


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
        title = (f"Orphans at {_pct(n, limit)} of tcp_max_orphans: with the timer path's "
                 f"penalty ({n} << 1 = {n << 1} > {limit}) orphans are being killed")
    elif n << 2 > limit:
        severity, shift = "warning", 2
        title = (f"Orphans at {_pct(n, limit)} of tcp_max_orphans: with the full penalty "
                 f"({n} << 2 = {n << 2} > {limit}) stuck orphans are being killed")
    else:
        return []
    evidence = [f"{n} orphans (sockstat, host-wide) against tcp_max_orphans {limit} "
                f"(host-wide); thresholds: {limit} at shift 0 (close path), {limit >> 1} at "
                f"shift 1, {limit >> 2} at shift 2 (timer path)",
                "on 5.16+ the kernel compares a copy of the count refreshed every 100 ms "
                "(tcp_orphan_cache); sockstat shows the exact sum"]
    want = _round_up(n * 4, 1024)
    cap = None
    if fig.mem_total:
        # Never advise more orphans than half the memory could hold at 64 KiB each.
        cap = max((fig.mem_total // 2 // ORPHAN_COST) // 1024 * 1024, 1024)
        want = min(want, cap)
    advice = []
    if want > limit:
        cost = f" (up to {size(want * ORPHAN_COST)} of unswappable memory at 64 KiB an orphan"
        cost += f", of this host's {size(fig.mem_total)})" if fig.mem_total else ")"
        advice.append(f"Size net.ipv4.tcp_max_orphans at about four times the peak to absorb "
                      f"the 4x penalty: {want}{cost}."
                      + (" That is capped at half of memory: fix the cause rather than raise "
                         "it further." if cap is not None and want == cap else ""))
        snippet.append(f"net.ipv4.tcp_max_orphans = {want}")
    elif cap is not None and cap <= limit and n * 4 > limit:
        advice.append(f"Raising net.ipv4.tcp_max_orphans is not the fix here: {limit} orphans "
                      f"at 64 KiB each may already pin {size(limit * ORPHAN_COST)} of this "
                      f"host's {size(fig.mem_total)}; end the orphans sooner instead.")
    advice.append("Orphans are sockets the application closed with data still unsent or "
                  "unacknowledged: look for peers that stop reading and for applications "
                  "closing busy connections; a lower net.ipv4.tcp_orphan_retries ends them "
                  "sooner.")
    return [_finding("orphans", severity, title, "net.ipv4.tcp_max_orphans", evidence, advice,
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
        return [_finding("time_wait", "info", f"TIME_WAIT at {_pct(tw, limit)} of "
                         f"tcp_max_tw_buckets in {where}", "net.ipv4.tcp_max_tw_buckets",
                         [f"{tw} TIME_WAIT sockets against tcp_max_tw_buckets {limit} "
                          f"(per network namespace since 4.11)"])]
    else:
        return []
    overflow = deltas.get("TCPTimeWaitOverflow")
    evidence = [f"{tw} TIME_WAIT sockets against tcp_max_tw_buckets {limit} "
                f"(per network namespace since 4.11)",
                "the kernel logs nothing for this since 2.6.37: only TcpExt "
                "TCPTimeWaitOverflow moves"]
    # Demand: what holds a bucket now plus what was refused, per TIME_WAIT lifetime.
    demand = tw
    if overflow and fig.interval_s > 0:
        evidence.append(f"TCPTimeWaitOverflow +{overflow} in {fig.interval_s:g} s")
        demand += int(overflow * TIME_WAIT_S / fig.interval_s)
    new_limit = _round_up(demand * 2, 1024)
    advice = ["Find who closes first: the side that closes first holds TIME_WAIT "
              "(`ss -tan state time-wait` shows the ports and peers).",
              "For outbound connection churn (this host is the client): reuse connections "
              "(keep-alive, pooling), and set net.ipv4.tcp_tw_reuse=1 so new outbound "
              "connections may reuse TIME_WAIT ports safely (timestamps keep it safe).",
              "Never tcp_tw_recycle: it broke clients behind NAT and was removed in Linux 4.12."]
    if new_limit > limit:
        advice.append(f"If the churn is legitimate, raise net.ipv4.tcp_max_tw_buckets to about "
                      f"{new_limit} (twice the demand of about {demand} per {TIME_WAIT_S} s); a "
                      f"TIME_WAIT socket costs only a few hundred bytes.")
        snippet.append(f"net.ipv4.tcp_max_tw_buckets = {new_limit}")
    if fig.tcp_tw_reuse != 1:
        snippet.append("net.ipv4.tcp_tw_reuse = 1")
    if not fig.own_netns:
        advice.append(f"Both are per network namespace: /etc/sysctl.d sets the initial one; for "
                      f"{fig.netns_label} set them inside it (`ip netns exec NAME sysctl -w`, or "
                      f"the container's sysctl settings).")
    return [_finding("time_wait", severity, title, "net.ipv4.tcp_max_tw_buckets", evidence,
                     advice, "Without TIME_WAIT a late duplicate segment of the old connection "
                     "can be taken for data of a new one on the same 4-tuple.")]


def _buffers(fig: Figures, worst: dict) -> List[dict]:
    total, high = worst["buffer_bytes"], worst["tcp_mem_high_bytes"]
    if total is None or high is None or total <= high:
        return []
    # Autotuning lets each socket grow to tcp_rmem[2] of receive and tcp_wmem[2] of send
    # buffer, all charged against the one host-wide tcp_mem: overcommitted by design, real
    # only when many sockets fill up at once (slow consumers).
    return [_finding(
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


def _orphan_memory(fig: Figures, worst: dict) -> List[dict]:
    cost, total = worst["orphan_bytes"], fig.mem_total
    if cost is None or not total or cost * 2 <= total:
        return []
    severity = "warning" if cost > total else "info"
    return [_finding(
        "orphan_memory", severity,
        f"tcp_max_orphans x 64 KiB = {size(cost)}, {_pct(cost, total)} of MemTotal "
        f"{size(total)}", "net.ipv4.tcp_max_orphans",
        [f"tcp_max_orphans {fig.tcp_max_orphans} x 64 KiB unswappable = {size(cost)}"],
        ["The limit no longer protects this host's memory: orphans could use it up before the "
         "limit trips. Lower net.ipv4.tcp_max_orphans towards four times the orphan peak."
         if severity == "warning" else
         "A storm of orphans could take more than half of memory before the limit trips."],
        "tcp_max_orphans exists to bound the memory held by sockets no process owns.")]


def _counters(fig: Figures, table: Dict[str, dict]) -> List[dict]:
    d = {k: v["delta"] for k, v in table.items()}
    out: List[dict] = []
    per = f"in {fig.interval_s:g} s"
    if d["TCPAbortOnMemory"]:
        out.append(_finding(
            "aborts_on_memory", "critical",
            f"{d['TCPAbortOnMemory']} connections killed by tcp_check_oom {per} (TCPAbortOnMemory)",
            None, [f"TCPAbortOnMemory +{d['TCPAbortOnMemory']}: orphans over tcp_max_orphans "
                   f"(with the shift penalty) or holding memory above tcp_mem[2]"],
            ["The kernel log prints at most 10 of these per 5 s: `tcpoom trace` shows each "
             "one with the limit it crossed."],
            "tcp_check_oom() resets and frees orphans when there are too many or TCP memory "
            "is over its hard limit."))
    if d["TCPTimeWaitOverflow"]:
        out.append(_finding(
            "tw_overflow", "warning",
            f"{d['TCPTimeWaitOverflow']} connections closed without TIME_WAIT {per} "
            f"(TCPTimeWaitOverflow)", "net.ipv4.tcp_max_tw_buckets",
            ["the TIME_WAIT table of this namespace is full; the kernel logs nothing"]))
    if d["TCPMemoryPressures"]:
        chrono = d["TCPMemoryPressuresChrono"]
        out.append(_finding(
            "pressure_entered", "warning",
            f"TCP entered memory pressure {d['TCPMemoryPressures']} times {per}",
            "net.ipv4.tcp_mem[1]",
            [f"TCPMemoryPressures +{d['TCPMemoryPressures']}"]
            + ([f"TCPMemoryPressuresChrono +{chrono} ms under pressure (added when left)"]
               if chrono else [])))
    drops = {k: d[k] for k in _DROPS if d[k]}
    if drops:
        out.append(_finding(
            "receive_drops", "warning",
            f"Received data dropped for lack of memory {per}: "
            + ", ".join(f"{k} +{v}" for k, v in drops.items()), None,
            [f"PruneCalled +{d['PruneCalled'] or 0}: receive queues collapsed to make room"],
            ["A socket over its receive budget (a reader that stopped) or tcp_mem refusing "
             "memory host-wide: peers retransmit what was dropped. " + _SLOW_CONSUMERS],
            "tcp_data_queue() drops a segment when tcp_try_rmem_schedule() cannot charge it."))
    elif d["PruneCalled"]:
        out.append(_finding(
            "receive_pruning", "info",
            f"Receive queues collapsed {d['PruneCalled']} times {per} (PruneCalled), nothing "
            f"dropped", None, ["slow readers fill their receive buffers"]))
    if d["TCPAbortOnTimeout"]:
        out.append(_finding(
            "aborts_on_timeout", "info",
            f"{d['TCPAbortOnTimeout']} connections gave up on their retries {per} "
            f"(TCPAbortOnTimeout)", None,
            ["peers that stopped answering; for orphans, net.ipv4.tcp_orphan_retries bounds "
             "how long they hold memory"]))
    history = {k: table[k]["total"] for k in _HISTORY
               if table[k]["total"] and not table[k]["delta"]}
    if history:
        out.append(_finding(
            "history", "info",
            "Counted before, not during the interval: "
            + ", ".join(f"{k} {v}" for k, v in history.items()), None,
            ["totals since boot (or since the namespace was made); they did not move now"]))
    return out


def diagnose(fig: Figures) -> Diagnosis:
    snippet: List[str] = []
    table = counter_table(fig)
    deltas = {k: v["delta"] for k, v in table.items()}
    worst = worst_cases(fig)
    findings = (_tcp_mem(fig, snippet) + _orphans(fig, snippet)
                + _time_wait(fig, snippet, deltas) + _counters(fig, table)
                + _buffers(fig, worst) + _orphan_memory(fig, worst))
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
        findings.insert(0, _finding("healthy", "ok",
                                    "No TCP socket-memory limit is reached or near", None))
        severity = "ok"
    text = ""
    if snippet:
        text = ("# /etc/sysctl.d/90-tcpoom.conf - sized from the figures read now\n"
                "# apply with: sysctl --system\n" + "\n".join(dict.fromkeys(snippet)) + "\n")
    return Diagnosis(findings, text, severity, not_checked)
