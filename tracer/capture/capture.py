"""A live capture: attach per the plan, hand batches of records to a sink,
sample what the kernel side cannot see, stop, and total up.

Shared by `trace` (and later `record` and `live`): the sink decides what to do
with records; this module never formats anything.
"""
from __future__ import annotations

import signal
import time
from typing import Callable, Dict, List, Optional

from tracer.model import events as ev
from tracer.kernel import facts as kernel_facts, loader, preload
from tracer.host import netns, procfs, snapshots
from tracer.host.privileges import privileged
from tracer.errors import KernelUnsupported, PermissionNeeded, UsageError
from tracer.model.events import EVENT_SIZE, FRAME, STRIDE, Event, frame
from tracer.model.samples import Sampled
from tracer.kernel.plan import Plan, build, choose_engine
from tracer.kernel.ringbuf import POLL_PERIOD_S
from .totals import Totals

SAMPLE_PERIOD_S = POLL_PERIOD_S    # /proc samples and ring reads share one period (serve: 1 s)
_FAMILY_OFFSET = ev.layout_offsets()["family"]


class Stop:
    """Why and when to stop: a signal, a duration, a count."""

    def __init__(self, duration: Optional[float], count: Optional[int]):
        self.deadline = time.monotonic() + duration if duration else None
        self.count = count
        self.reason = ""
        self._old = {}

    def install(self) -> None:
        # SIGINT and SIGTERM both end the capture cleanly, with totals
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _on_signal(self, signum, frame) -> None:
        self.reason = signal.Signals(signum).name

    def request(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason

    def check(self, seen: int) -> bool:
        if self.reason:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.reason = "duration"
        elif self.count is not None and seen >= self.count:
            self.reason = "count"
        return bool(self.reason)


class PressureSampler:
    """Memory-pressure transitions from /proc/net/protocols ("press"), for
    kernels without function probes: no tracepoint exists for them."""

    def __init__(self) -> None:
        self.state = procfs.tcp_memory_pressure()

    def poll(self) -> Optional[Event]:
        now = procfs.tcp_memory_pressure()
        if now is None or now == self.state:
            return None
        self.state = now
        sock = procfs.read_sockstat().get("TCP", {})
        limits = procfs.tcp_limits()
        return Event.make(ts_ns=time.monotonic_ns(), family=ev.PRESSURE, method=ev.SAMPLED,
                          verdict=ev.VERDICT_ENTER if now else ev.VERDICT_LEAVE,
                          memory_allocated=sock.get("mem", -1), tcp_mem=limits.tcp_mem,
                          pid=0, comm=b"")


def resolve_netns(ref: Optional[str]) -> int:
    if not ref:
        return 0
    try:
        # reachable, not just a number: its TcpExt counters are read from inside it
        return netns.lookup(ref)[1]
    except (netns.NetnsError, OSError) as e:
        raise UsageError(f"--netns {ref}: {e}") from None


def _tcpext(ns: Optional[int]) -> Dict[str, int]:
    return procfs.read_netstat(ns or None).get("TcpExt", {})


class Capture:
    def __init__(self, filters: loader.Filters, ringbuf_bytes: int = loader.DEFAULT_RINGBUF,
                 facts: Optional[kernel_facts.KernelFacts] = None, synthetic_pid: int = 0,
                 sample_orphans: bool = True, engine: str = "auto"):
        self.synthetic_pid = synthetic_pid
        # records taken from the ring per batch: bounds the copies in memory
        self.batch_records = 16384
        # fill orphan figures for display as events arrive (trace); a
        # recording writes its own snapshots instead
        self.sample_orphans = sample_orphans
        # how often run() samples /proc and calls tick: serve, left running,
        # takes 1 s (reading /proc/net/protocols costs ~0.6 ms of CPU)
        self.sample_period = SAMPLE_PERIOD_S
        if not privileged():
            raise PermissionNeeded("tracing needs root (or CAP_BPF and CAP_PERFMON): run it as root")
        self.filters = filters
        self.facts = facts or preload.facts() or kernel_facts.gather()
        # "co-re" or "bcc" (KernelUnsupported for bcc without headers)
        self.engine = choose_engine(self.facts, engine)
        self.plan: Plan = build(self.facts, engine=self.engine)
        self.families = [f for f in self.plan.families if filters.wants(f)]
        self.sampled = Sampled()
        self._ringbuf_bytes = ringbuf_bytes
        self.session: Optional[loader.Session] = None
        self.received: Dict[str, int] = {f: 0 for f in self.families}
        self.made: Dict[str, int] = {f: 0 for f in self.families}
        self.tw_settled = 0         # TIME_WAIT candidates confirmed by user space (< 5.10)
        self.tw_undecided = 0       # ... still open at the stop, too young to decide

    def start(self) -> "Capture":
        if not any(self.plan.families[f].programs for f in self.families) and \
                any(f != "pressure" for f in self.families):
            raise KernelUnsupported(
                "no BPF attach method for " + ", ".join(self.families) + " on this kernel" +
                (f" ({self.plan.notes[0]})" if self.plan.notes else "") + ": `tcpoom probes` says why")
        if self.engine == "bcc":
            from tracer.kernel import bcc_engine
            preload.discard()       # a co-re guess
            self.session = bcc_engine.start(self.facts, self.plan, self.filters,
                                            self._ringbuf_bytes, self.synthetic_pid)
        else:
            self.session = loader.start(self.facts, self.plan, self.filters, self._ringbuf_bytes,
                                        self.synthetic_pid, early=preload.take())
        self.plan = self.session.plan
        self._misses_before = self._misses_now()
        # the baseline of every comparison, taken once everything is attached
        self.first_snapshot = snapshots.take(self.filters.netns or None)
        self.tcpext_before = self.first_snapshot.get("tcpext") or _tcpext(self.filters.netns)
        self.t0 = time.monotonic()
        self._pressure = (PressureSampler() if "pressure" in self.families
                          and self.plan.families["pressure"].method == "sampled" else None)
        self._fill_orphans = (self.sample_orphans and "oom_check" in self.families and
                              self.plan.families["oom_check"].fields.get("orphans", ("",))[0] == "sampled")
        self._refresh_sampled()
        return self

    def _refresh_sampled(self) -> None:
        sock = procfs.read_sockstat().get("TCP", {})
        try:
            max_orphans = int(procfs.read_host_sysctl("net.ipv4.tcp_max_orphans"))
        except (OSError, ValueError):
            max_orphans = None
        self.sampled.add(time.monotonic_ns(), sock.get("orphan"), max_orphans)

    def run(self, sink: Callable[[bytes, int], int], stop: Stop,
            tick: Optional[Callable[[], None]] = None) -> Totals:
        """Feed batches of raw records (back-to-back struct tcpoom_event) to
        `sink(payload, count)`, which returns how many it took as events,
        until `stop` says so. `tick` runs every sampling period."""
        rb = self.session.ringbuf
        taken = 0
        next_sample = next_fill = 0.0
        backlog = False
        stop.install()
        try:
            while not stop.check(taken):
                # one batch per poll period (or at once when the ring is
                # filling, and again while a full batch leaves more behind):
                # each batch has a fixed cost in every sink
                if not backlog:
                    rb.wait(self.sample_period)
                payload, count = rb.read_raw(EVENT_SIZE, self.batch_records)
                backlog = count >= self.batch_records
                now = time.monotonic()
                if count and self._fill_orphans and now >= next_fill:
                    # the orphan count and limit the kernel side could not
                    # read: sampled right after the events, not up to 100 ms later
                    next_fill = now + 0.01
                    self._refresh_sampled()
                if now >= next_sample:
                    next_sample = now + self.sample_period
                    settled = self._settle_tw()
                    if settled:
                        payload += settled
                        count += len(settled) // STRIDE
                    if self.sample_orphans:     # a recording samples with its own snapshots
                        self._refresh_sampled()
                    if self._pressure:
                        pe = self._pressure.poll()
                        if pe is not None:
                            # TCPMemoryPressures counts entries only
                            if pe.verdict & ev.VERDICT_ENTER:
                                self.made["pressure"] += 1
                            payload += frame(pe.pack())
                            count += 1
                    if tick:
                        tick()
                if count:
                    self._count_received(payload)
                    taken += sink(payload, count)
            # TIME_WAIT candidates still open at the stop, confirmed once no
            # reset or error can follow any more
            settled = self._settle_tw(final=True)
            if settled:
                self._count_received(settled)
                taken += sink(settled, len(settled) // STRIDE)
            # what the kernel committed before we stopped
            while True:
                payload, count = rb.read_raw(EVENT_SIZE, self.batch_records)
                if not count:
                    break
                self._count_received(payload)
                taken += sink(payload, count)
        finally:
            stop.restore()
        return self.totals(stop.reason)

    def _tw_open(self) -> int:
        """TIME_WAIT candidates neither confirmed nor cancelled yet (tracepoint tier)."""
        if "tw_overflow" not in self.families or \
                self.plan.families["tw_overflow"].method not in ("tp_btf", "raw_tp") or \
                not hasattr(self.session, "settle_tw"):
            return 0
        c = self.session.counters()
        return c[ev.CNT_TW_CANDIDATES] - c[ev.CNT_TW_CANCELLED] - c[ev.CNT_TW_OVERFLOW] - self.tw_settled

    def _settle_tw(self, final: bool = False) -> bytes:
        """Inferred TIME_WAIT overflows (tracepoint tier) are confirmed in the
        kernel once TW_SETTLE_MS passed without a reset or an error on their
        socket, but only when some TCP socket changes state. Where none does
        (a quiet host; the stop), the kernel's own confirmation program is run
        from here, so they are still counted in the kernel. Kernels that
        cannot run it (before 5.10) have them confirmed here instead, as
        records of their own. `final`: wait out the window of the last ones
        first; any made during that wait stay undecided."""
        if self._tw_open() <= 0:
            return b""
        if final:
            time.sleep(ev.TW_SETTLE_MS / 1000)
        if self.session.settle_tw_in_kernel() and not (final and self._tw_open() > 0):
            return b""
        # before 5.10; or, at the stop, any the kernel's run left (it stops
        # at the first young one in its queue): taken from tw_pending by age
        records, young = self.session.settle_tw(ev.TW_SETTLE_MS / 1000)
        self.tw_settled += len(records)
        if final:
            self.tw_undecided = young
        return b"".join(frame(r) for r in records)

    def counters(self) -> list:
        """The in-kernel counters, with the TIME_WAIT overflows user space
        confirmed (kernels before 5.10) in their family's slot."""
        c = self.session.counters()
        c[ev.CNT_TW_OVERFLOW] += self.tw_settled
        return c

    def _count_received(self, payload: bytes) -> None:
        families = payload[FRAME + _FAMILY_OFFSET::STRIDE]
        for fam in self.received:
            self.received[fam] += families.count(ev.FAMILY_IDS[fam])

    def _misses_now(self) -> Dict[str, Optional[int]]:
        m = getattr(self.session, "misses", None)
        return m.read() if m is not None else {}

    def missed(self, counters: Optional[List[int]] = None) -> Dict[str, Optional[int]]:
        """Per traced family, the calls the kernel recorded as missed by its
        programs since the start (not counted in the counters either), plus
        the kprobe returns whose entry a nested call took (`counters` given);
        None where this kernel counts neither."""
        now = self._misses_now()
        out: Dict[str, Optional[int]] = {}
        for f in self.families:
            if not self.plan.families[f].programs:
                continue
            n = None if now.get(f) is None else now[f] - (self._misses_before.get(f) or 0)
            slot = ev.CNT_UNPAIRED_BASE + ev.FAMILY_IDS[f]
            unpaired = counters[slot] if counters and slot < len(counters) else 0
            out[f] = n if not unpaired else (n or 0) + unpaired
        return out

    def missed_unmeasured(self) -> Dict[str, str]:
        m = getattr(self.session, "misses", None)
        return {f: why for f, why in (m.unmeasured() if m is not None else {}).items()
                if f in self.families}

    def totals(self, reason: str) -> Totals:
        counters = self.session.counters()
        after = _tcpext(self.filters.netns)
        made_sampled = {f: n for f, n in self.made.items() if n}
        return Totals(self.plan, self.families, time.monotonic() - self.t0, counters,
                      self.received, made_sampled, self.tcpext_before, after,
                      self.filters.netns or netns.netns_inode(), reason,
                      missed=self.missed(), missed_unmeasured=self.missed_unmeasured(),
                      tw_settled=self.tw_settled, tw_undecided=self.tw_undecided,
                      netns_filtered=bool(self.filters.netns))

    def close(self) -> None:
        if self.session:
            self.session.close()
            self.session = None


