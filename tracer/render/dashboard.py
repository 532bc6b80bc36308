"""The live dashboard: a state fed by records and /proc snapshots (live or
replayed), and a renderer that draws it, redrawn on a timer, never per event.

The state holds the same Aggregate the reports use, pruned to a window so a
long storm cannot grow it, plus the few things only a live view needs (the
latest events, the kernel log count, TcpExt deltas since start).
"""
from __future__ import annotations

import collections
import time
from typing import Deque, Dict, List, Optional

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tracer.model import events as ev
from tracer.model.aggregate import Aggregate, comm_of, top_with_socket
from tracer.model.events import Event
from tracer.model.clock import Clock
from tracer.model.samples import Sampled
from .sparkline import sparkline
from tracer.model.families import FAMILY_ORDER as _FAM_ORDER, FAMILY_SLOT, KERNEL_COUNTER, summed_delta

WINDOW_S = 600          # per-second series kept (10 minutes)
RATE_S = 60             # seconds shown in the rate sparklines
LATEST = 50             # latest events kept
LIVE_DETAIL = 2048      # records a batch folded into the top tables and peaks


class DashboardState:
    def __init__(self, header: dict, plan_families: Dict[str, dict], families: List[str],
                 clock: Clock):
        self.header = header
        self.plan = plan_families
        self.families = families
        self.clock = clock
        self.agg = Aggregate(header)
        self.latest: Deque[Event] = collections.deque(maxlen=LATEST)
        self.sampled = Sampled()
        self.start_ns: Optional[int] = None
        self.now_ns: Optional[int] = None       # the data's clock (live: now; replay: the recording)
        self.snapshot: dict = {}
        self.tcpext_start: Dict[str, int] = {}
        self.tcpext_now: Dict[str, int] = {}
        self.counters: Optional[List[int]] = None
        self.missed: Dict[str, Optional[int]] = {}     # live: the kernel's miss counts by family
        self.kmsg_lines: Dict[str, int] = {}
        self.kmsg_suppressed = 0
        self.kmsg_error: Optional[str] = None
        self.tw_by_netns: Dict[int, tuple] = {}  # netns -> (tw_count, limit) at its latest overflow
        self.holders: Optional[dict] = None
        self.paused = False
        self.note = ""

    # ------------------------------------------------------------ feeding
    def add_events(self, payload: bytes, count: int, stride: int = ev.STRIDE, skip: int = ev.FRAME) -> None:
        if not count:
            return
        # a storm: exact counts, details from a sample (about 2048 records a batch)
        self.agg.add_events(payload, count, stride, skip, detail_every=max(1, count // LIVE_DETAIL))
        # decode only what can be shown
        first = max(0, count - LATEST)
        for i in range(first, count):
            e = Event.decode(payload, i * stride + skip)
            self.latest.append(e)
            if e.family == ev.TW_OVERFLOW:
                self.tw_by_netns[e.netns] = (e.tw_count, e.max_tw_buckets)
        last_ts = self.latest[-1].ts_ns
        self.now_ns = max(self.now_ns or 0, last_ts)
        if self.start_ns is None:
            self.start_ns = self.agg.first_ns

    def add_snapshot(self, snap: dict) -> None:
        self.agg.add_snapshot(snap)
        self.snapshot.update({k: v for k, v in snap.items() if v is not None})
        tcp = snap.get("sockstat", {}).get("TCP", {})
        self.sampled.add(snap.get("ts_ns", 0), tcp.get("orphan"), snap.get("limits", {}).get("tcp_max_orphans"))
        if snap.get("tcpext"):
            if not self.tcpext_start:
                self.tcpext_start = dict(snap["tcpext"])
            self.tcpext_now = snap["tcpext"]
        ts = snap.get("ts_ns")
        if ts:
            self.now_ns = max(self.now_ns or 0, ts)
            if self.start_ns is None:
                self.start_ns = ts
        self._prune()

    def add_kmsg(self, lines: Dict[str, int], suppressed: int) -> None:
        for k, n in lines.items():
            self.kmsg_lines[k] = self.kmsg_lines.get(k, 0) + n
        self.kmsg_suppressed += suppressed

    def _prune(self) -> None:
        """Bound the state: per-second series older than the window go."""
        if self.now_ns is None:
            return
        cutoff = self.now_ns // 1_000_000_000 - WINDOW_S
        a = self.agg
        for key in [k for k in a.per_second if k[1] < cutoff]:
            del a.per_second[key]
        for sec in [s for s in a.snapshot_series if s < cutoff]:
            del a.snapshot_series[sec]
        for sec in [s for s in a.oom_shift_by_sec if s < cutoff]:
            del a.oom_shift_by_sec[sec]
        for c in (a.processes, a.owners, a.who_cgroups, a.local_ports, a.remote_peers, a.netns):
            if len(c) > 5000:           # keep the heavy hitters only
                keep = c.most_common(1000)
                c.clear()
                c.update(dict(keep))

    # ------------------------------------------------------------ figures
    def seen(self, family: str) -> int:
        """In-kernel count where the family is traced in the kernel, else what arrived."""
        if self.counters and self.plan.get(family, {}).get("method") != "sampled":
            return self.counters[FAMILY_SLOT[family]]
        if family == "pressure":
            return self.agg.pressure_entries()
        return self.agg.by_family.get(ev.FAMILY_IDS[family], 0)

    def lost(self) -> int:
        if not self.counters:
            return sum(self.agg.loss.values())
        return sum(self.counters[ev.CNT_LOST_BASE:ev.CNT_LOST_END])

    def missed_total(self) -> int:
        """Calls the kernel recorded as missed by the programs (live: read from
        the kernel each second; replay: the recording's loss blocks)."""
        if self.missed:
            return sum(n for n in self.missed.values() if n)
        return sum(self.agg.missed.values())

    def tcpext_delta(self, name: str) -> Optional[int]:
        """The delta of one TcpExt counter, or the sum of a family's ("A+B")."""
        def one(n: str) -> Optional[int]:
            if n not in self.tcpext_now or n not in self.tcpext_start:
                return None
            return self.tcpext_now[n] - self.tcpext_start[n]
        return summed_delta(name, one)

    def rate_series(self, family: str) -> List[int]:
        if self.now_ns is None:
            return []
        fid = ev.FAMILY_IDS[family]
        end = self.now_ns // 1_000_000_000
        return [self.agg.per_second.get((fid, s), 0) for s in range(end - RATE_S + 1, end + 1)]

    def recent_shift(self, seconds: int = 60) -> int:
        if self.now_ns is None:
            return 0
        end = self.now_ns // 1_000_000_000
        return max([s for sec, s in self.agg.oom_shift_by_sec.items() if sec > end - seconds] or [0])


# ---------------------------------------------------------------- rendering

def _bar(value: Optional[int], marks: List[Optional[int]], width: int) -> Text:
    """A gauge: filled up to value, with the watermarks marked, scaled to the top mark."""
    top = max([m for m in marks if m] + [value or 0, 1])
    fill = int(min(value or 0, top) * width / top)
    cells = ["█"] * fill + ["·"] * (width - fill)
    for m in marks:
        if m:
            i = min(width - 1, int(m * width / top))
            cells[i] = "┃"
    style = "green"
    if value is not None and marks and marks[-1] and value > marks[-1]:
        style = "bold red"
    elif value is not None and len(marks) > 1 and marks[-2] and value > marks[-2]:
        style = "yellow"
    return Text("".join(cells), style=style)


def _num(n) -> str:
    return "?" if n is None else f"{n:,}"


def _gauges(st: DashboardState, width: int) -> Table:
    t = Table.grid(padding=(0, 1))
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True, overflow="ellipsis")
    bar_w = max(10, min(30, width - 52))
    snap = st.snapshot
    tcp = snap.get("sockstat", {}).get("TCP", {})
    lim = snap.get("limits", {})
    page = lim.get("page_size", 4096)
    tm = lim.get("tcp_mem") or [None, None, None]
    mem = tcp.get("mem")
    pressure = "PRESSURE" if snap.get("pressure") else "normal"
    t.add_row("TCP mem", _bar(mem, list(tm), bar_w),
              f"{_num(mem)}p {((mem or 0) * page) >> 20}MiB / {_num(tm[2])}p high ({pressure})")
    orphans, max_orphans = tcp.get("orphan"), lim.get("tcp_max_orphans")
    shift = st.recent_shift()
    eff = (orphans << shift) if orphans is not None else None
    t.add_row("orphans", _bar(eff, [max_orphans], bar_w),
              f"{_num(orphans)} <<{shift} = {_num(eff)} / {_num(max_orphans)} max")
    tw, max_tw = tcp.get("tw"), lim.get("tcp_max_tw_buckets")
    t.add_row("TIME_WAIT", _bar(tw, [max_tw], bar_w), f"{_num(tw)} / {_num(max_tw)} buckets")
    for ns, (n, m) in sorted(st.tw_by_netns.items())[:3]:
        if len(st.tw_by_netns) > 1 or ns != st.header.get("filters", {}).get("netns"):
            t.add_row(f" netns {ns}"[:10], _bar(n, [m], bar_w), f"{_num(n)} / {_num(m)} at overflow")
    return t


def _rates(st: DashboardState, width: int) -> Table:
    t = Table.grid(padding=(0, 1))
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True, justify="right")
    spark_w = max(10, min(RATE_S, width - 34))
    for fam in _FAM_ORDER:
        if fam not in st.families:
            continue
        series = st.rate_series(fam)
        t.add_row(fam, Text(sparkline(series[-spark_w:], spark_w), style="cyan"),
                  f"{series[-1] if series else 0}/s  {_num(st.seen(fam))}")
    return t


def _kernel_log(st: DashboardState) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, expand=False)
    for col in ("", "tcpoom saw", "kernel counter", "log lines"):
        t.add_column(col, justify="right" if col else "left", no_wrap=True)
    lines = st.kmsg_lines
    log_of = {"oom_check": lines.get("TCP: too many orphaned sockets", 0)
              + lines.get("TCP: out of memory -- consider tuning tcp_mem", 0)
              + lines.get("Out of socket memory", 0),
              "tw_overflow": lines.get("time wait bucket table overflow", 0)}
    for fam in _FAM_ORDER:
        if fam not in st.families:
            continue
        kc = KERNEL_COUNTER.get(fam)
        d = st.tcpext_delta(kc) if kc else None
        t.add_row(fam, _num(st.seen(fam)), "-" if d is None else f"{d:,}",
                  str(log_of[fam]) if fam in log_of else "-")
    suffix = f"  {st.kmsg_suppressed:,} suppressed" if st.kmsg_suppressed else ""
    if st.kmsg_error:
        suffix = f"  kernel log: {st.kmsg_error}"
    missed = st.missed_total()
    bad = st.lost() or missed
    shown = f"lost: {st.lost():,}" + (f"  missed by the probes: {missed:,}" if missed else "")
    return Group(t, Text(shown + suffix, style="yellow" if bad else "dim"))


def _latest(st: DashboardState, rows: int, width: int) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, expand=True)
    t.add_column("time", no_wrap=True)
    t.add_column("family", no_wrap=True)
    t.add_column("what", no_wrap=True, overflow="ellipsis", ratio=3)
    if width >= 100:
        t.add_column("socket", no_wrap=True, overflow="ellipsis", ratio=3)
    t.add_column("process", no_wrap=True, overflow="ellipsis", ratio=1)
    for e in list(st.latest)[-rows:][::-1]:
        if e.family == ev.OOM_CHECK:
            o, mo = st.sampled.at(e.ts_ns)
            o = e.orphans if e.orphans >= 0 else o
            what = (f"{','.join(e.verdict_names())} {e.caller_name} shift={e.shift} orphans={_num(o)} "
                    f"mem={e.memory_allocated}p")
        elif e.family == ev.TW_OVERFLOW:
            what = f"tw={e.tw_count}/{e.max_tw_buckets}"
        elif e.family == ev.MEM_EXCEED:
            what = f"{e.verdict_names()[0]} {e.memory_allocated}p>{e.tcp_mem2}p"
        elif e.family == ev.MEM_DROP:
            what = " ".join(e.verdict_names()) + (f" rmem={e.rmem_alloc}/{e.rcvbuf}" if e.rcvbuf >= 0 else "")
        else:
            what = f"{e.verdict_names()[0]} mem={e.memory_allocated}p"
        row = [st.clock.hms(e.ts_ns)[:12], e.family_name, what]
        if width >= 100:
            row.append(f"{e.local} > {e.remote}" if e.af else "")
        # the socket's owner where known (a softirq's context is whoever it interrupted)
        pid, comm = e.who_pid, e.who_comm
        row.append(f"{comm}[{pid}]" if pid else comm)
        t.add_row(*row)
    return t


def _top_owners(st: DashboardState, n: int) -> list:
    """The sockets' owners; the context tasks for records that name none."""
    owners = [(k, c) for k, c in st.agg.owners.most_common(n + 1) if k[0]]
    return owners[:n] if owners else st.agg.processes.most_common(n)


def _top_cgroups(st: DashboardState, n: int) -> list:
    """(container or cgroup, events), the root cgroup left out."""
    merged: Dict[str, int] = {}
    names = st.agg.names
    for (_, owner_cg, memcg), k in st.agg.who_cgroups.items():
        if not owner_cg and not memcg:
            continue
        _, _, label = names.who(Event.make(owner_cgroup=owner_cg, memcg=memcg, owner_fidelity=1))
        if label:
            merged[label] = merged.get(label, 0) + k
    return sorted(merged.items(), key=lambda kv: -kv[1])[:n]


def _top(st: DashboardState) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    t.add_column("process", no_wrap=True, overflow="ellipsis", max_width=18)
    t.add_column("n", justify="right")
    groups = _top_cgroups(st, 4)
    if groups:
        t.add_column("cgroup / container", no_wrap=True, overflow="ellipsis", max_width=30)
        t.add_column("n", justify="right")
    t.add_column("port", justify="right")
    t.add_column("n", justify="right")
    procs = _top_owners(st, 4)
    ports = top_with_socket(st.agg.local_ports, 4)
    for i in range(max(len(procs), len(ports), len(groups))):
        p = procs[i] if i < len(procs) else None
        name = ""
        if p:
            (pid, c0, c1), n = p
            name = comm_of(c0, c1) + f"[{pid}]"
        row = [name, str(p[1]) if p else ""]
        if groups:
            row += [groups[i][0], str(groups[i][1])] if i < len(groups) else ["", ""]
        row += [str(ports[i][0]) if i < len(ports) else "", str(ports[i][1]) if i < len(ports) else ""]
        t.add_row(*row)
    return t


def _holders(st: DashboardState) -> Optional[Table]:
    h = st.holders
    if not h or not st.snapshot.get("pressure"):
        return None
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, title="holding the most memory",
              title_justify="left")
    for col in ("process", "rx", "tx", "socket"):
        t.add_column(col, no_wrap=True, overflow="ellipsis")
    for s in h.get("top", [])[:3]:
        t.add_row(f"{s.get('comm') or '?'}{s.get('pids') or ''}", _num(s.get("rx_queue")),
                  _num(s.get("tx_queue")), f"{s.get('local')} > {s.get('remote')}")
    return t


def _header(st: DashboardState, width: int) -> Text:
    h = st.header
    up = ((st.now_ns or 0) - (st.start_ns or st.now_ns or 0)) / 1e9
    rate = sum(st.rate_series(f)[-1] if st.rate_series(f) else 0 for f in st.families)
    fid = " ".join(f"{f.split('_')[0]}:{st.plan.get(f, {}).get('method', '?')}" for f in st.families)
    line = (f"tcpoom {'replay ' if st.paused is not None and h.get('_replay') else ''}"
            f"{h.get('hostname', '?')} {h.get('kernel', '?')} {h.get('engine', '?')}  up {up:.0f}s  "
            f"{rate:,} ev/s  lost {st.lost():,}" + (f"  missed {st.missed_total():,}" if st.missed_total() else ""))
    text = Text(line, style="bold")
    text.append("\n" + fid[:width], style="dim")
    if st.paused:
        text.append("  PAUSED", style="bold yellow")
    if st.agg.detail_sampled > 1:
        text.append(f"  storm: top tables from 1 in {st.agg.detail_sampled} events", style="yellow")
    if st.note:
        text.append("  " + st.note, style="yellow")
    return text


def render(st: DashboardState, width: int = 80, height: int = 24):
    """The whole screen as one renderable; narrower terminals drop columns."""
    parts = [_header(st, width), _gauges(st, width)]
    if width >= 120:
        side = Table.grid(padding=(0, 2))
        side.add_column()
        side.add_column()
        side.add_row(_rates(st, width // 2), _kernel_log(st))
        parts.append(side)
        side2 = Table.grid(padding=(0, 2))
        side2.add_column()
        side2.add_column()
        holders = _holders(st)
        side2.add_row(_top(st), holders if holders is not None else Text(""))
        parts.append(side2)
        used = 3 + 4 + 6 + 6
    else:
        parts += [_rates(st, width), _kernel_log(st)]
        used = 3 + 4 + len(st.families) + len(st.families) + 3
    rows = max(2, height - used - 3)
    parts.append(_latest(st, rows, width))
    parts.append(Text("q quit" + ("  space pause" if st.header.get("_replay") else ""), style="dim"))
    return Group(*parts)


def summary_text(st: DashboardState) -> str:
    """The periodic plain-text summary when stdout is not a terminal."""
    tcp = st.snapshot.get("sockstat", {}).get("TCP", {})
    lim = st.snapshot.get("limits", {})
    parts = [time.strftime("%H:%M:%S")]
    for fam in st.families:
        series = st.rate_series(fam)
        kc = KERNEL_COUNTER.get(fam)
        d = st.tcpext_delta(kc) if kc else None
        parts.append(f"{fam}={st.seen(fam)}" + (f"(kernel {d})" if d is not None else "")
                     + f" {series[-1] if series else 0}/s")
    parts.append(f"mem={tcp.get('mem')}/{(lim.get('tcp_mem') or [None] * 3)[2]}p "
                 f"orphans={tcp.get('orphan')}/{lim.get('tcp_max_orphans')} "
                 f"tw={tcp.get('tw')}/{lim.get('tcp_max_tw_buckets')} lost={st.lost()}")
    return " ".join(parts)
