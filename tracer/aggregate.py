"""One aggregation for live views, replays and reports: it sees only records
and /proc snapshots, never the kernel.

Events arrive as buffers of back-to-back fixed-size records and are read in
columns (strided memoryview slices), so a million events aggregate without a
Python object per event per field. State is bounded: counters, per-second
series and top-N tables, never the events themselves.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Tuple

from . import events as ev

_OFF = ev.layout_offsets()
_SIZE = ev.EVENT_SIZE


def _col(mv_by_code: Dict[str, memoryview], name: str) -> list:
    """One field of every record in the buffer, as a list."""
    code = dict(ev.LAYOUT)[name]
    width = {"Q": 8, "q": 8, "I": 4, "i": 4, "H": 2, "B": 1}[code]
    return mv_by_code[code][_OFF[name] // width::_SIZE // width].tolist()


def _columns(records: bytes) -> Dict[str, list]:
    mv = memoryview(records)
    views = {c: mv.cast(c) for c in ("Q", "q", "I", "i", "H", "B")}
    names = ("ts_ns", "netns", "pid", "family", "method", "af", "sport", "dport", "state", "caller",
             "memory_allocated", "tcp_mem2", "orphans", "max_orphans", "shift", "tw_count",
             "max_tw_buckets", "verdict", "wmem_queued", "rmem_alloc")
    cols = {}
    for n in names:
        if n == "tcp_mem2":
            cols[n] = views["q"][(_OFF["tcp_mem"] + 16) // 8::_SIZE // 8].tolist()
        else:
            cols[n] = _col(views, n)
    return cols


class Peak:
    __slots__ = ("value", "ts_ns", "extra")

    def __init__(self) -> None:
        self.value: Optional[int] = None
        self.ts_ns = 0
        self.extra: dict = {}

    def offer(self, value: int, ts_ns: int, **extra) -> None:
        if value is not None and value >= 0 and (self.value is None or value > self.value):
            self.value, self.ts_ns, self.extra = value, ts_ns, extra


class Aggregate:
    TOP = 10

    def __init__(self, header: dict):
        self.header = header
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None
        self.by_family: Counter = Counter()
        self.by_verdict: Counter = Counter()          # (family, verdict bits)
        self.oom_callers: Counter = Counter()
        self.methods: Counter = Counter()             # (family, method)
        self.per_second: Counter = Counter()          # (family, second)
        self.shift: Counter = Counter()
        self.oom_shift_by_sec: Dict[int, int] = {}    # second -> highest shift decided
        self.orphans_at_decision: Counter = Counter()  # bucketed
        self.processes: Counter = Counter()           # (pid, comm)
        self.local_ports: Counter = Counter()
        self.remote_peers: Counter = Counter()        # (af, raw address)
        self.netns: Counter = Counter()
        self.peaks = {k: Peak() for k in ("orphans", "orphans_shifted", "memory_pages", "tw", "tw_sampled")}
        self.snapshot_series: Dict[int, dict] = {}    # second -> figures
        self.snapshots = 0
        self.first_snapshot: Optional[dict] = None
        self.last_snapshot: Optional[dict] = None
        self.holders: List[dict] = []
        self.holder_processes: Counter = Counter()   # comm -> max bytes held
        self.counters: Optional[List[int]] = None
        self.loss: Counter = Counter()
        self.trailer: Optional[dict] = None
        self.damage: List[str] = []
        self.events = 0

    # ---------------------------------------------------------- feeding
    def add_events(self, records: bytes, count: int) -> None:
        if not count:
            return
        records = bytes(records[:count * _SIZE])
        c = _columns(records)
        ts = c["ts_ns"]
        lo, hi = min(ts), max(ts)
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        fam = c["family"]
        self.events += count
        self.by_family.update(fam)
        self.by_verdict.update(zip(fam, c["verdict"]))
        self.methods.update(zip(fam, c["method"]))
        self.per_second.update(zip(fam, (t // 1_000_000_000 for t in ts)))
        self.netns.update(c["netns"])
        comms = [records[o:o + 16].split(b"\0", 1)[0] for o in range(_OFF["comm"], len(records), _SIZE)]
        self.processes.update(zip(c["pid"], comms))
        has_socket = [af in (2, 10) for af in c["af"]]
        self.local_ports.update(p for p, ok in zip(c["sport"], has_socket) if ok)
        daddr = _OFF["daddr"]
        self.remote_peers.update(
            (af, records[i * _SIZE + daddr: i * _SIZE + daddr + (4 if af == 2 else 16)])
            for i, af in enumerate(c["af"]) if af in (2, 10))
        # per family figures: loop only over the records of that family
        idx_oom = [i for i, f in enumerate(fam) if f == ev.OOM_CHECK]
        for i in idx_oom:
            self.oom_callers[c["caller"][i]] += 1
            s, o = c["shift"][i], c["orphans"][i]
            self.shift[s] += 1
            sec = ts[i] // 1_000_000_000
            if s > self.oom_shift_by_sec.get(sec, -1):
                self.oom_shift_by_sec[sec] = s
            if o >= 0:
                self.orphans_at_decision[_bucket(o)] += 1
                self.peaks["orphans"].offer(o, ts[i], source="exact")
                if s >= 0:
                    self.peaks["orphans_shifted"].offer(o << s, ts[i], shift=s, orphans=o,
                                                        max_orphans=c["max_orphans"][i])
        for i, f in enumerate(fam):
            m = c["memory_allocated"][i]
            if m >= 0 and f != ev.PRESSURE:
                self.peaks["memory_pages"].offer(m, ts[i], tcp_mem2=c["tcp_mem2"][i])
            if f == ev.TW_OVERFLOW:
                self.peaks["tw"].offer(c["tw_count"][i], ts[i], limit=c["max_tw_buckets"][i],
                                       netns=c["netns"][i])

    def add_snapshot(self, snap: dict) -> None:
        self.snapshots += 1
        if self.first_snapshot is None:
            self.first_snapshot = snap
        self.last_snapshot = snap
        ts = snap.get("ts_ns", 0)
        tcp = snap.get("sockstat", {}).get("TCP", {})
        limits = snap.get("limits", {})
        sec = ts // 1_000_000_000
        fig = {
            "mem": tcp.get("mem"), "orphan": tcp.get("orphan"), "tw": tcp.get("tw"),
            "inuse": tcp.get("inuse"), "pressure": snap.get("pressure"),
            "tcp_mem": limits.get("tcp_mem"), "max_orphans": limits.get("tcp_max_orphans"),
            "max_tw": limits.get("tcp_max_tw_buckets"), "tcpext": snap.get("tcpext"),
        }
        old = self.snapshot_series.get(sec)
        if old:
            # several snapshots in one second (taken as events arrive): keep the
            # worst of each figure, the lowest of each limit, the latest counters
            for k in ("mem", "orphan", "tw", "inuse"):
                if fig[k] is None or (old[k] is not None and old[k] > fig[k]):
                    fig[k] = old[k]
            if old["max_orphans"] is not None and (fig["max_orphans"] is None or old["max_orphans"] < fig["max_orphans"]):
                fig["max_orphans"] = old["max_orphans"]
            if old["tcp_mem"] and (not fig["tcp_mem"] or old["tcp_mem"][2] < fig["tcp_mem"][2]):
                fig["tcp_mem"] = old["tcp_mem"]
            fig["pressure"] = fig["pressure"] or old["pressure"]
            fig["tcpext"] = fig["tcpext"] or old["tcpext"]
        self.snapshot_series[sec] = fig
        if tcp.get("orphan") is not None:
            self.peaks["orphans"].offer(tcp["orphan"], ts, source="sampled")
        if tcp.get("mem") is not None:
            tm = limits.get("tcp_mem") or [None, None, -1]
            self.peaks["memory_pages"].offer(tcp["mem"], ts, tcp_mem2=tm[2], source="sampled")
        if tcp.get("tw") is not None:
            self.peaks["tw_sampled"].offer(tcp["tw"], ts, limit=limits.get("tcp_max_tw_buckets"), source="sampled")

    def add_holders(self, snap: dict) -> None:
        self.holders.append(snap)
        if len(self.holders) > 50:                # keep the first and the latest
            del self.holders[1:2]
        for s in snap.get("top", []):
            held = s.get("mem") or (s.get("rx_queue", 0) + s.get("tx_queue", 0))
            key = (s.get("comm") or "?", tuple(s.get("pids") or ()))
            self.holder_processes[key] = max(self.holder_processes[key], held)

    def add_counters(self, block: dict) -> None:
        self.counters = block.get("counters")

    def add_loss(self, block: dict) -> None:
        self.loss.update(block.get("lost", {}))

    def set_trailer(self, block: dict) -> None:
        self.trailer = block

    def add_block(self, block) -> None:
        from . import tracefile as tf
        if block.type == tf.EVENTS:
            size, count, records = block.events()
            if size == _SIZE:
                self.add_events(records, count)
        elif block.type == tf.SNAPSHOT:
            self.add_snapshot(block.json())
        elif block.type == tf.HOLDERS:
            self.add_holders(block.json())
        elif block.type == tf.COUNTERS:
            self.add_counters(block.json())
        elif block.type == tf.LOSS:
            self.add_loss(block.json())
        elif block.type == tf.TRAILER:
            self.set_trailer(block.json())


def _bucket(n: int) -> int:
    """Power-of-two bucket floor (0, 1, 2, 4, 8, ...) for distributions."""
    return 0 if n <= 0 else 1 << (n.bit_length() - 1)


def top(counter: Counter, n: int) -> List[Tuple]:
    return counter.most_common(n)
