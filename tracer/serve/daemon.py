"""The serve daemon: a Capture left attached (or /proc alone when BPF cannot
load), the metrics endpoint on its own thread, and the flight recorder fed
from the capture's loop."""
from __future__ import annotations

import dataclasses
import signal
import sys
import time
from typing import Callable, Optional

from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from tracer import __version__
from tracer.host import netns as _netns
from tracer.host import snapshots
from tracer.capture.capture import Capture, Stop
from ..errors import TcpoomError, UsageError
from tracer.kernel.loader import Filters
from .cgroup_counts import CgroupCounts
from .collector import ServeState, TcpoomCollector
from .headroom import NetnsDirectory
from .http import Endpoint
from .netns_counts import NetnsCounts
from .webconfig import WebConfig

TICK_S = 1.0


@dataclasses.dataclass
class ServeOptions:
    listen: str = "127.0.0.1:9979"
    web: WebConfig = dataclasses.field(default_factory=WebConfig)
    filters: Filters = dataclasses.field(default_factory=Filters)
    ringbuf_size: int = 16 << 20
    engine: str = "auto"
    max_netns: int = 32
    max_cgroups: int = 32
    no_bpf: bool = False
    duration: Optional[float] = None
    synthetic_pid: int = 0                  # benchmarks: scripts/bench_serve.py
    flight: Optional[object] = None         # a flight.FlightOptions, or None: no recorder


def log(msg: str) -> None:
    print(f"tcpoom: {msg}", file=sys.stderr, flush=True)


class Daemon:
    def __init__(self, opts: ServeOptions, log: Callable[[str], None] = log):
        self.opts = opts
        self.log = log
        self.state = ServeState(version=__version__, netns_counts=NetnsCounts(opts.max_netns),
                                cgroup_counts=CgroupCounts(opts.max_cgroups))
        self.cap: Optional[Capture] = None
        self.flight = None
        self.triggers = None
        self.endpoint: Optional[Endpoint] = None
        self._usr1 = False
        self._next_tick = 0.0
        self._next_evict = 0.0

    # ------------------------------------------------------------ start
    def _start_capture(self) -> None:
        if self.opts.no_bpf:
            self.state.bpf_error = "--no-bpf"
            return
        try:
            cap = Capture(self.opts.filters, self.opts.ringbuf_size, sample_orphans=False,
                          engine=self.opts.engine, synthetic_pid=self.opts.synthetic_pid)
            cap.batch_records = 4096
            # idle cost: each wake-up samples /proc/net/protocols (~0.6 ms); the
            # exact TCPMemoryPressures counter is exported beside the sampled flag
            cap.sample_period = TICK_S
            cap.start()
        except (TcpoomError, OSError) as e:
            if isinstance(e, UsageError):
                raise
            # keep serving what /proc gives: the headroom is most of what matters
            self.state.bpf_error = str(e)
            self.log(f"BPF not loaded ({e}): serving /proc figures only (tcpoom_bpf_up 0)")
            return
        self.cap = cap
        s = self.state
        s.engine = cap.plan.engine
        s.counters = cap.session.counters
        s.received = cap.received
        s.plan_methods = {f: cap.plan.families[f].method for f in cap.families}
        s.ring_size = self.opts.ringbuf_size
        rb = cap.session.ringbuf
        s.ring_pending = rb.pending if rb is not None else None
        fds = getattr(cap.session, "program_fds", None)
        s.program_fds = fds() if fds else {}

    def start(self) -> "Daemon":
        from .malloc import pin_mmap_threshold
        pin_mmap_threshold()        # no heap growth in steps over a long storm
        self._start_capture()
        s = self.state
        s.directory = NetnsDirectory(self.opts.max_netns)
        self._start_cgroups()
        ns = self.opts.filters.netns
        if self.cap is not None:
            s.netns_counts.register(ns or s.directory.own)
        if ns:
            try:
                s.directory.add(ns, _netns.resolve(ns))
            except _netns.NetnsError:
                pass
        registry = CollectorRegistry()
        registry.register(TcpoomCollector(s))
        ProcessCollector(registry=registry)
        # bound first: a port in use stops us before anything is written
        self.endpoint = Endpoint(self.opts.listen, registry, self.opts.web,
                                 on_trigger=self.trigger, log=self.log)
        if self.opts.flight is not None:
            from .flight import FlightRecorder
            from .triggers import Triggers
            self.flight = FlightRecorder(self.opts.flight, self._header(), log=self.log)
            self.triggers = Triggers(self.opts.flight.triggers, self.opts.flight.headroom,
                                     rearm_s=self.opts.flight.before_s)
            self.flight.limit_of = self._limit_of
            s.flight = self.flight.stats()
            s.incidents = self.flight.incidents
        self.endpoint.start()
        what = (f"BPF {', '.join(f'{f} ({m})' for f, m in s.plan_methods.items())}" if self.cap
                else "/proc only")
        where = f" in netns {ns}" if ns else ""
        self.log(f"serving {what}{where} on {self.endpoint.url}"
                 + (f"; flight recorder in {self.opts.flight.directory}" if self.flight else "")
                 + ". SIGTERM to stop.")
        return self

    def _start_cgroups(self) -> None:
        from tracer.host import cgroups as cg
        from .cgroup_memory import CgroupMemory
        s = self.state
        try:
            mounts = cg.read_mounts()
            s.cgroup_names = cg.Cgroups(mounts)
            s.cgroup_memory = CgroupMemory(self.opts.max_cgroups, mounts)
            s.cgroup_memory.refresh(force=True)
        except OSError as e:
            self.log(f"cgroups not read ({e}): no per-cgroup socket memory")
            s.cgroup_memory = None

    def _cgroup_tick(self, now: float) -> None:
        """Off the scrape: which cgroups hold the most socket memory (a walk at
        most every 30 s), and the slots of removed cgroups given back."""
        mem = self.state.cgroup_memory
        if mem is None:
            return
        mem.refresh()
        if now < self._next_evict:
            return
        self._next_evict = now + 60.0
        names = self.state.cgroup_names

        def gone(key) -> bool:
            ident = names.identity(*key) if names is not None else None
            if ident is None or not mem.holds(key[0]):
                return False
            return mem.gone(ident["path"])
        self.state.cgroup_counts.evict(gone)

    def _header(self) -> dict:
        from .segment_file import header
        return header(self.cap, self.opts.filters)

    # ------------------------------------------------------------ run
    def trigger(self, reason: str) -> bool:
        if self.flight is None:
            return False
        limit = None
        if self.triggers is not None:
            if self.flight.incident is None:
                self.triggers.mark(self.state.cgroup_counts.classes)
            limit = self._limit_of(reason)
        return self.flight.trigger(reason, limit)

    def _limit_of(self, reason: str) -> Optional[str]:
        return self.triggers.limit(reason, dict(self.state.cgroup_counts.classes)) if self.triggers else None

    def _on_usr1(self, signum, frame) -> None:
        self._usr1 = True

    def _sink(self, payload: bytes, count: int) -> int:
        self.state.netns_counts.add(payload, count)
        self.state.cgroup_counts.add(payload, count)
        if self.flight is not None:
            self.flight.add_events(payload, count)
        return count

    def _tick(self) -> None:
        now = time.monotonic()
        if self._usr1:
            self._usr1 = False
            if not self.trigger("sigusr1"):
                self.log("SIGUSR1: no flight recorder, or an incident is already being recorded")
        self._cgroup_tick(now)
        if self.flight is None:
            return
        if now >= self._next_tick:
            self._next_tick = now + TICK_S - 0.05     # run() calls us once a period, give or take
            snap = snapshots.take(self.opts.filters.netns or None)
            counters = self.state.counters() if self.state.counters else None
            self.flight.add_snapshot(snap, counters)
            for reason in self.triggers.check(counters, snap, classes=self.state.cgroup_counts.classes):
                self.trigger(reason)
        self.flight.tick()
        self.state.flight = self.flight.stats()

    def run(self) -> str:
        stop = Stop(self.opts.duration, None)
        old = signal.signal(signal.SIGUSR1, self._on_usr1)
        try:
            if self.cap is not None:
                totals = self.cap.run(self._sink, stop, self._tick)
                return totals.stop_reason
            stop.install()
            try:
                while not stop.check(0):
                    self._tick()
                    time.sleep(0.1)
            finally:
                stop.restore()
            return stop.reason
        finally:
            signal.signal(signal.SIGUSR1, old)

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
        if self.flight is not None:
            try:
                self.flight.close()
            except TcpoomError as e:
                self.log(str(e))
            self.flight = None
        if self.cap is not None:
            self.cap.close()
            self.cap = None


def serve(opts: ServeOptions) -> str:
    d = Daemon(opts)
    try:
        d.start()
        reason = d.run()
        d.log(f"stopped ({reason})")
        return reason
    finally:
        d.close()
