"""One aggregation for live views, replays and reports: it sees only records
and /proc snapshots, never the kernel.

Events arrive as buffers of back-to-back fixed-size records and are read in
columns (strided memoryview slices), so a million events aggregate without a
Python object per event per field. State is bounded: counters, per-second
series and top-N tables, never the events themselves.
"""
from __future__ import annotations

import operator
import struct
from collections import Counter
from itertools import compress, repeat
from typing import Dict, List, Optional, Tuple

from . import events as ev

_OFF = ev.layout_offsets()
_SIZE = ev.EVENT_SIZE


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
        self.peaks = {k: Peak() for k in ("orphans", "orphans_shifted", "memory_pages", "memory_over",
                                          "tw", "tw_sampled")}
        self.snapshot_series: Dict[int, dict] = {}    # second -> figures
        self.snapshots = 0
        self.tcpext_first: Optional[dict] = None
        self.tcpext_last: Optional[dict] = None
        self.first_snapshot: Optional[dict] = None
        self.last_snapshot: Optional[dict] = None
        self.holders: List[dict] = []
        self.holder_processes: Counter = Counter()   # comm -> max bytes held
        self.counters: Optional[List[int]] = None
        self.loss: Counter = Counter()
        self.trailer: Optional[dict] = None
        self.damage: List[str] = []
        self.events = 0
        self.detail_sampled = 1       # > 1: the live view's details fold in 1 record in this many

    # ---------------------------------------------------------- feeding
    def add_events(self, records: bytes, count: int, stride: int = ev.STRIDE, skip: int = ev.FRAME,
                   detail_every: int = 1) -> None:
        """Fold a buffer of records in. Each step runs in C over whole columns
        (Counter over zip, max, itertools.compress with a family mask): a
        million events take about three seconds, with no object per event kept.

        Counts by family, verdict and second are always exact. A live view
        under a storm passes `detail_every` > 1: the top tables, peaks and
        distributions then fold in one record in that many (reports never do)."""
        if not count:
            return
        # a buffer of whole strides (the last record's padding may be missing)
        records = bytes(records[:count * stride]).ljust(count * stride, b"\0")
        mv = memoryview(records)
        q, u16 = mv.cast("Q"), mv.cast("H")
        ts = q[(skip + _OFF["ts_ns"]) // 8::stride // 8].tolist()
        fam = list(records[skip + _OFF["family"]::stride])
        lo, hi = min(ts), max(ts)
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        self.events += count
        self.by_family.update(fam)
        self.by_verdict.update(zip(fam, u16[(skip + _OFF["verdict"]) // 2::stride // 2].tolist()))
        self.per_second.update(zip(fam, map(operator.floordiv, ts, repeat(1_000_000_000, count))))
        if detail_every > 1 and count > detail_every:
            records = b"".join(records[i:i + stride] for i in range(0, count * stride, detail_every * stride))
            count = len(records) // stride
            self.detail_sampled = detail_every
        self._add_details(records, count, stride, skip)

    def _add_details(self, records: bytes, count: int, stride: int, skip: int) -> None:
        mv = memoryview(records)
        q, i32, u32, u16 = mv.cast("Q"), mv.cast("i"), mv.cast("I"), mv.cast("H")
        qs, i32s, u16s = stride // 8, stride // 4, stride // 2

        def col(view, step, name, extra=0):
            width = stride // step
            return view[(skip + _OFF[name] + extra) // width::step].tolist()

        ts = col(q, qs, "ts_ns")
        fam_bytes = records[skip + _OFF["family"]::stride]
        fam = list(fam_bytes)
        self.methods.update(zip(fam, list(records[skip + _OFF["method"]::stride])))
        secs = list(map(operator.floordiv, ts, repeat(1_000_000_000, count)))
        self.netns.update(col(u32, i32s, "netns"))
        # comm as its two 8-byte words: decoded once per distinct process at the end
        self.processes.update(zip(col(u32, i32s, "pid"), col(q, qs, "comm"), col(q, qs, "comm", 8)))
        af = col(u16, u16s, "af")
        self.local_ports.update(zip(af, col(u16, u16s, "sport")))
        self.remote_peers.update(zip(af, col(q, qs, "daddr"), col(q, qs, "daddr", 8)))
        mem = col(q, qs, "memory_allocated")
        top_mem = max(mem)
        if top_mem >= 0:
            high = col(q, qs, "tcp_mem", 16)
            i = mem.index(top_mem)
            self.peaks["memory_pages"].offer(top_mem, ts[i], tcp_mem2=high[i])
            # the furthest over the hard limit in force at the moment (percent)
            over = list(map(_percent, mem, high))
            v = max(over)
            if v >= 0:
                i = over.index(v)
                self.peaks["memory_over"].offer(v, ts[i], pages=mem[i], tcp_mem2=high[i])
        if ev.OOM_CHECK in fam_bytes:
            self._add_oom(fam_bytes, ts, secs, i32, i32s, records, stride, skip)
        if ev.TW_OVERFLOW in fam_bytes:
            mask = fam_bytes.translate(_MASKS[ev.TW_OVERFLOW])
            tw = list(compress(col(i32, i32s, "tw_count"), mask))
            v = max(tw)
            i = tw.index(v)
            limits = list(compress(col(i32, i32s, "max_tw_buckets"), mask))
            netns = list(compress(col(u32, i32s, "netns"), mask))
            self.peaks["tw"].offer(v, list(compress(ts, mask))[i], limit=limits[i], netns=netns[i])

    def _add_oom(self, fam_bytes: bytes, ts, secs, i32, i32s, records, stride: int, skip: int) -> None:
        mask = fam_bytes.translate(_MASKS[ev.OOM_CHECK])

        def oom(view, step, name):
            return list(compress(view[(skip + _OFF[name]) // (stride // step)::step].tolist(), mask))

        shift = oom(i32, i32s, "shift")
        orphans = oom(i32, i32s, "orphans")
        self.oom_callers.update(compress(records[skip + _OFF["caller"]::stride], mask))
        self.shift.update(shift)
        for sec, s in set(zip(compress(secs, mask), shift)):
            if s > self.oom_shift_by_sec.get(sec, -1):
                self.oom_shift_by_sec[sec] = s
        known = Counter(orphans)
        known.pop(-1, None)
        for o, n in known.items():
            self.orphans_at_decision[_bucket(o)] += n
        if known:
            oom_ts = list(compress(ts, mask))
            v = max(orphans)
            self.peaks["orphans"].offer(v, oom_ts[orphans.index(v)], source="exact")
            shifted = list(map(_shifted, orphans, shift))
            v = max(shifted)
            i = shifted.index(v)
            max_orphans = oom(i32, i32s, "max_orphans")
            self.peaks["orphans_shifted"].offer(v, oom_ts[i], shift=shift[i], orphans=orphans[i],
                                                max_orphans=max_orphans[i])

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
            "max_tw": limits.get("tcp_max_tw_buckets"),
        }
        # the TcpExt counters only at both ends: the series stays small (a
        # live view keeps ten minutes of it)
        if snap.get("tcpext"):
            if self.tcpext_first is None:
                self.tcpext_first = snap["tcpext"]
            self.tcpext_last = snap["tcpext"]
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

    def pressure_entries(self) -> int:
        """Entries into memory pressure: what TCPMemoryPressures counts (leaves are not)."""
        return sum(n for (f, v), n in self.by_verdict.items() if f == ev.PRESSURE and v & ev.VERDICT_ENTER)

    def add_block(self, block) -> None:
        from . import tracefile as tf
        if block.type == tf.EVENTS:
            size, count, records, stride, skip = block.events()
            if size == _SIZE and stride % 8 == 0 and skip % 8 == 0:
                self.add_events(records, count, stride, skip)
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


# bytes.translate tables: a record's family byte -> 1 for the wanted family, else 0
_MASKS = {f: bytes(1 if i == f else 0 for i in range(256)) for f in ev.FAMILIES}


def _percent(pages: int, high: int) -> int:
    return pages * 100 // high if pages >= 0 and high > 0 else -1


def _shifted(orphans: int, shift: int) -> int:
    return orphans << shift if orphans >= 0 and shift >= 0 else -1


def comm_of(w0: int, w1: int) -> str:
    """A process name kept as the two 8-byte words of its comm field."""
    return struct.pack("<QQ", w0, w1).split(b"\0", 1)[0].decode(errors="replace")


def top_with_socket(counter: Counter, n: int = 10) -> List[Tuple]:
    """Top entries of a table keyed (af, ...) that had an address family,
    the family dropped from single keys: [(key, count)]."""
    merged: Dict = {}
    for key, count in counter.items():
        if key[0] in (2, 10):
            k = key[1] if len(key) == 2 else key
            merged[k] = merged.get(k, 0) + count
    return sorted(merged.items(), key=lambda kv: -kv[1])[:n]


def _bucket(n: int) -> int:
    """Power-of-two bucket floor (0, 1, 2, 4, 8, ...) for distributions."""
    return 0 if n <= 0 else 1 << (n.bit_length() - 1)


def top(counter: Counter, n: int) -> List[Tuple]:
    return counter.most_common(n)
