"""The Prometheus collector: every figure read when Prometheus asks, none kept.

Exact counts come from the in-kernel per-CPU counters (never dropped); the
TcpExt counters they must match sit beside them; headroom gauges come from
/proc at scrape time; per-netns event counts come from the ring (which can
lose records under a storm: the loss counters are exported too).
docs/metrics.md lists every name.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, Iterator, List, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from tracer.model import events as ev
from . import cgroup_metrics
from .cgroup_counts import CgroupCounts
from .headroom import NetnsDirectory, read_host, read_many
from .netns_counts import NetnsCounts

PREFIX = "tcpoom"


@dataclasses.dataclass
class ServeState:
    """What the daemon shares with the collector (read on the HTTP thread)."""
    version: str
    engine: str = "none"
    counters: Optional[Callable[[], List[int]]] = None     # None: BPF not loaded
    plan_methods: Dict[str, str] = dataclasses.field(default_factory=dict)
    received: Dict[str, int] = dataclasses.field(default_factory=dict)
    ring_size: int = 0
    ring_pending: Optional[Callable[[], int]] = None
    program_fds: Dict[str, int] = dataclasses.field(default_factory=dict)
    netns_counts: NetnsCounts = dataclasses.field(default_factory=NetnsCounts)
    cgroup_counts: CgroupCounts = dataclasses.field(default_factory=CgroupCounts)
    cgroup_names: Optional[object] = None       # a tracer.host.cgroups.Cgroups: id -> path
    cgroup_memory: Optional[object] = None      # a cgroup_memory.CgroupMemory
    directory: Optional[NetnsDirectory] = None
    bpf_error: str = ""
    flight: Dict[str, float] = dataclasses.field(default_factory=dict)
    incidents: Dict[str, int] = dataclasses.field(default_factory=dict)
    scrape_errors: int = 0
    last_scrape_s: float = 0.0


def _fdinfo(fd: int) -> Dict[str, int]:
    """run_time_ns and run_cnt of a BPF program (kernel 5.1+, counted only
    while kernel.bpf_stats_enabled is 1)."""
    out = {}
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("run_time_ns", "run_cnt"):
                    out[k] = int(v)
    except (OSError, ValueError):
        pass
    return out


def _bpf_stats_enabled() -> Optional[int]:
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class TcpoomCollector:
    def __init__(self, state: ServeState):
        self.state = state

    def describe(self):
        return []       # unchecked collector: names are documented in docs/metrics.md

    def collect(self) -> Iterator:
        t0 = time.monotonic()
        s = self.state
        yield from self._self_metrics(s)
        counters = None
        if s.counters is not None:
            try:
                counters = s.counters()
            except Exception:
                s.scrape_errors += 1
        yield from self._kernel_counts(s, counters)
        yield from self._netns(s)
        yield from cgroup_metrics.collect(s, counters is not None)
        yield from self._host_headroom(s)
        yield from self._flight(s)
        s.last_scrape_s = time.monotonic() - t0

    # ------------------------------------------------------------ self
    def _self_metrics(self, s: ServeState):
        up = GaugeMetricFamily(f"{PREFIX}_bpf_up", "1 if the BPF programs are loaded and attached, "
                               "0 if serving /proc figures only")
        up.add_metric([], 1 if s.counters is not None else 0)
        yield up
        info = InfoMetricFamily(f"{PREFIX}_build", "tcpoom version and engine",
                                value={"version": s.version, "engine": s.engine})
        yield info
        method = GaugeMetricFamily(f"{PREFIX}_family_method", "The attach method of each event family "
                                   "(sampled: from /proc)", labels=["family", "method"])
        for fam, m in sorted(s.plan_methods.items()):
            method.add_metric([fam, m], 1)
        yield method
        stats = _bpf_stats_enabled()
        if stats is not None:
            g = GaugeMetricFamily(f"{PREFIX}_bpf_stats_enabled",
                                  "kernel.bpf_stats_enabled: program run time and count are counted only when 1")
            g.add_metric([], stats)
            yield g
        if s.program_fds:
            rt = CounterMetricFamily(f"{PREFIX}_bpf_program_run_seconds",
                                     "Time spent in each BPF program (while bpf_stats_enabled)",
                                     labels=["program"])
            rc = CounterMetricFamily(f"{PREFIX}_bpf_program_runs",
                                     "Runs of each BPF program (while bpf_stats_enabled)", labels=["program"])
            for name, fd in sorted(s.program_fds.items()):
                info_ = _fdinfo(fd)
                if "run_time_ns" in info_:
                    rt.add_metric([name], info_["run_time_ns"] / 1e9)
                    rc.add_metric([name], info_.get("run_cnt", 0))
            yield rt
            yield rc
        if s.ring_size:
            size = GaugeMetricFamily(f"{PREFIX}_ring_buffer_size_bytes", "Size of the BPF ring buffer")
            size.add_metric([], s.ring_size)
            yield size
            if s.ring_pending is not None:
                try:
                    pending = s.ring_pending()
                except Exception:
                    pending = None
                if pending is not None:
                    fill = GaugeMetricFamily(f"{PREFIX}_ring_buffer_pending_bytes",
                                             "Bytes committed to the ring buffer and not read yet")
                    fill.add_metric([], pending)
                    yield fill
        err = CounterMetricFamily(f"{PREFIX}_scrape_errors", "Readings that failed during scrapes")
        err.add_metric([], s.scrape_errors)
        yield err
        last = GaugeMetricFamily(f"{PREFIX}_last_scrape_duration_seconds", "How long the previous scrape took")
        last.add_metric([], s.last_scrape_s)
        yield last

    # ------------------------------------------------------------ in-kernel
    def _kernel_counts(self, s: ServeState, c: Optional[List[int]]):
        if c is None:
            return
        kills = CounterMetricFamily(
            f"{PREFIX}_orphan_kills", "Orphaned sockets killed by tcp_check_oom (TCPAbortOnMemory), "
            "by path (close: __tcp_close with shift 0; timer: tcp_out_of_resources)", labels=["path"])
        close, timer = c[ev.CNT_OOM_CLOSE], c[ev.CNT_OOM_TIMER]
        kills.add_metric(["close"], close)
        kills.add_metric(["timer"], timer)
        kills.add_metric(["unknown"], max(0, c[ev.CNT_OOM_CHECK] - close - timer))
        yield kills
        verdict = CounterMetricFamily(
            f"{PREFIX}_orphan_kill_verdicts", "Orphan kills by the test that failed (both can hold)",
            labels=["verdict"])
        verdict.add_metric(["too_many_orphans"], c[ev.CNT_OOM_ORPHANS])
        verdict.add_metric(["out_of_memory"], c[ev.CNT_OOM_MEMORY])
        yield verdict
        resets = CounterMetricFamily(f"{PREFIX}_orphan_kill_resets", "Orphan kills that sent a reset")
        resets.add_metric([], c[ev.CNT_OOM_RESET])
        yield resets
        tw = CounterMetricFamily(f"{PREFIX}_tw_overflows",
                                 "TIME_WAIT buckets refused at tcp_max_tw_buckets (TCPTimeWaitOverflow)")
        tw.add_metric([], c[ev.CNT_TW_OVERFLOW])
        yield tw
        refusals = CounterMetricFamily(
            f"{PREFIX}_memory_refusals", "Socket memory allocations refused (sock_exceed_buf_limit), by side",
            labels=["side"])
        refusals.add_metric(["send"], c[ev.CNT_MEM_SEND])
        refusals.add_metric(["recv"], c[ev.CNT_MEM_RECV])
        yield refusals
        press = CounterMetricFamily(
            f"{PREFIX}_pressure_transitions", "TCP memory pressure entered and left (in-kernel where the "
            "plan probes the functions, else sampled from /proc/net/protocols)", labels=["direction"])
        sampled = s.plan_methods.get("pressure") == "sampled"
        ps = s.netns_counts.pressure_sampled
        press.add_metric(["enter"], ps["enter"] if sampled else c[ev.CNT_PRESSURE_ENTER])
        press.add_metric(["leave"], ps["leave"] if sampled else c[ev.CNT_PRESSURE_LEAVE])
        yield press
        drops = CounterMetricFamily(
            f"{PREFIX}_memory_drops", "Received segments dropped for memory (skb:kfree_skb), by site: "
            "rcvq+ofo+backlog = TCPRcvQDrop+TCPOFODrop+TCPBacklogDrop; ofo_pruned counts skbs "
            "(OfoPruned counts calls)", labels=["site"])
        for site, slot in (("rcvq", ev.CNT_DROP_RCVQ), ("ofo", ev.CNT_DROP_OFO),
                           ("rcvq_or_ofo", ev.CNT_DROP_UNSPLIT), ("backlog", ev.CNT_DROP_BACKLOG),
                           ("ofo_pruned", ev.CNT_DROP_PRUNE)):
            drops.add_metric([site], c[slot])
        yield drops
        lost = CounterMetricFamily(f"{PREFIX}_ring_lost_events",
                                   "Events counted in the kernel but not written to the ring buffer (full)",
                                   labels=["family"])
        recv = CounterMetricFamily(f"{PREFIX}_events_received", "Event records read from the ring buffer",
                                   labels=["family"])
        for fid, fam in sorted(ev.FAMILIES.items()):
            lost.add_metric([fam], c[ev.CNT_LOST_BASE + fid])
            recv.add_metric([fam], s.received.get(fam, 0))
        yield lost
        yield recv
        filt = CounterMetricFamily(f"{PREFIX}_events_filtered", "Events dropped in the kernel by --netns/--pid/--port")
        filt.add_metric([], c[ev.CNT_FILTERED])
        yield filt

    # ------------------------------------------------------------ per netns
    def _netns(self, s: ServeState):
        counts = CounterMetricFamily(
            f"{PREFIX}_netns_events", "Events per network namespace and family, from the ring buffer "
            "(can lose records under a storm: see tcpoom_ring_lost_events_total)", labels=["netns", "family"])
        for (ns, fam), n in sorted(s.netns_counts.snapshot().items()):
            counts.add_metric([ns, fam], n)
        yield counts
        if s.directory is None:
            return
        s.directory.named()
        s.directory.resolve(s.netns_counts.inodes(), time.monotonic())
        tw = GaugeMetricFamily(f"{PREFIX}_tw_buckets", "TIME_WAIT sockets in the namespace (sockstat tw)",
                               labels=["netns"])
        tw_max = GaugeMetricFamily(f"{PREFIX}_tw_buckets_limit", "net.ipv4.tcp_max_tw_buckets of the namespace",
                                   labels=["netns"])
        ext = CounterMetricFamily(f"{PREFIX}_tcpext", "The kernel's own TcpExt counters (/proc/net/netstat) "
                                  "of the namespace, beside tcpoom's counts", labels=["netns", "counter"])
        for inode, fig in sorted(read_many(s.directory.items()).items()):
            if fig is None:
                # a namespace gone since it was listed: forget it
                s.directory.forget(inode)
                continue
            label = str(inode)
            if fig.tw is not None:
                tw.add_metric([label], fig.tw)
            if fig.max_tw_buckets is not None:
                tw_max.add_metric([label], fig.max_tw_buckets)
            for k, v in sorted(fig.tcpext.items()):
                ext.add_metric([label, k], v)
        yield tw
        yield tw_max
        yield ext

    # ------------------------------------------------------------ host
    def _host_headroom(self, s: ServeState):
        try:
            h = read_host()
        except (OSError, ValueError):
            s.scrape_errors += 1
            return
        mem = GaugeMetricFamily(f"{PREFIX}_tcp_memory_bytes",
                                "Memory allocated to TCP sockets, host-wide (sockstat TCP mem x page size)")
        if h.memory_bytes is not None:
            mem.add_metric([], h.memory_bytes)
        yield mem
        thr = GaugeMetricFamily(f"{PREFIX}_tcp_mem_threshold_bytes",
                                "net.ipv4.tcp_mem in bytes: min, pressure (enter pressure above), "
                                "max (refuse above)", labels=["threshold"])
        head = GaugeMetricFamily(f"{PREFIX}_tcp_memory_headroom_bytes",
                                 "tcp_mem threshold minus TCP memory now (negative: over it)",
                                 labels=["threshold"])
        for name, b in h.tcp_mem_bytes().items():
            thr.add_metric([name], b)
            if h.memory_bytes is not None:
                head.add_metric([name], b - h.memory_bytes)
        yield thr
        yield head
        press = GaugeMetricFamily(f"{PREFIX}_tcp_memory_pressure",
                                  "1 while TCP is in memory-pressure mode (/proc/net/protocols)")
        if h.pressure is not None:
            press.add_metric([], int(h.pressure))
        yield press
        orph = GaugeMetricFamily(f"{PREFIX}_orphan_sockets", "Orphaned TCP sockets, host-wide (sockstat orphan)")
        if h.orphans is not None:
            orph.add_metric([], h.orphans)
        yield orph
        lim = GaugeMetricFamily(f"{PREFIX}_orphan_sockets_limit",
                                "Orphans above which tcp_check_oom kills: tcp_max_orphans >> shift "
                                "(shift 0 on close, 1 or 2 on the retransmit/probe timer)", labels=["shift"])
        for shift, v in h.orphan_limits().items():
            lim.add_metric([str(shift)], v)
        yield lim
        if h.sockets_allocated is not None:
            alloc = GaugeMetricFamily(f"{PREFIX}_tcp_sockets_allocated", "TCP sockets allocated (sockstat alloc)")
            alloc.add_metric([], h.sockets_allocated)
            yield alloc

    # ------------------------------------------------------------ flight recorder
    def _flight(self, s: ServeState):
        if not s.flight:
            return
        up = GaugeMetricFamily(f"{PREFIX}_flight_recorder_up",
                               "1 while the flight recorder writes its ring, 0 once stopped (a full disk)")
        up.add_metric([], s.flight.get("up", 0))
        yield up
        b = GaugeMetricFamily(f"{PREFIX}_flight_recorder_bytes", "Bytes in the flight recorder's ring on disk")
        b.add_metric([], s.flight.get("bytes", 0))
        yield b
        inc = CounterMetricFamily(f"{PREFIX}_incidents", "Incident files written, by trigger", labels=["trigger"])
        for trig, n in sorted(s.incidents.items()):
            inc.add_metric([trig], n)
        yield inc
