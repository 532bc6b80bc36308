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
import itertools
from itertools import compress, repeat
from typing import Dict, List, Optional, Tuple

from . import events as ev
from .columns import FAMILY_MASKS, Columns, KeyRows, count_keys, count_rows
from .containers import Names

_OFF = ev.layout_offsets()
_SIZE = ev.EVENT_SIZE
_NS = 1_000_000_000


# The top tables. Their keys are a few fields of the record, counted on
# packed rows (columns.count_rows) and decoded into the keys (the value, or the
# tuple of values) when a table is read: once per distinct row, not per record.
_DETAIL_FIELDS = {
    "methods": [("family", 0), ("method", 0)],
    "netns": [("netns", 0)],
    "processes": [("pid", 0), ("comm", 0), ("comm", 8)],            # the context task, comm as two words
    "owners": [("owner_pid", 0), ("owner_comm", 0), ("owner_comm", 8)],  # the sockets' owners
    "who_cgroups": [("family", 0), ("owner_cgroup", 0), ("memcg", 0)],   # owner's v2 cgroup, memcg
    "local_ports": [("af", 0), ("sport", 0)],
    "remote_peers": [("af", 0), ("daddr", 0), ("daddr", 8)],
}
# Every record feeds those seven: they share one row (each field once, the
# widest first so none needs padding), so a record costs one count instead of
# seven; the row is split into their keys when decoded. Where only one or two
# of them vary in a batch (the ports of a storm from one process), those are
# counted alone and the others once (Aggregate._add_details).
_DETAIL_ORDER = sorted({f for fields in _DETAIL_FIELDS.values() for f in fields},
                       key=lambda f: (-KeyRows([f]).fields[0][3], f))    # [3]: its width in bytes
_DETAIL = KeyRows(_DETAIL_ORDER)
_DETAIL_PICK = [(t, [_DETAIL_ORDER.index(f) for f in fields]) for t, fields in _DETAIL_FIELDS.items()]


def _split_detail(v: tuple):
    return [(t, v[at[0]] if len(at) == 1 else tuple(v[i] for i in at)) for t, at in _DETAIL_PICK]


def _single(table: str):
    return lambda v: ((table, v),)


_DETAIL_TABLES = tuple(_DETAIL_FIELDS)
# row kind -> (its fields, its keys in the tables)
ROWS = {
    "detail": (_DETAIL, _split_detail),
    **{t: (KeyRows(fields), _single(t)) for t, fields in _DETAIL_FIELDS.items()},
    "oom_callers": (KeyRows([("caller", 0)]), _single("oom_callers")),
    "shift": (KeyRows([("shift", 0)]), _single("shift")),
    "mem_classes": (KeyRows([("mem_class", 0), ("memcg", 0), ("memcg_limit", 0), ("derived", 0)]),
                    _single("mem_classes")),
    "drop_causes": (KeyRows([("verdict", 0), ("mem_class", 0), ("derived", 0)]),   # mem_drop: site, cause
                    _single("drop_causes")),
}
# table -> the row kinds counted into it
TABLES = {**{t: ("detail", t) for t in _DETAIL_TABLES},
          **{k: (k,) for k in ("oom_callers", "shift", "mem_classes", "drop_causes")}}
# distinct rows kept undecoded at most: past this they are decoded (bounded
# memory on a host whose every record differs)
ROWS_MAX = 50_000


class _Table:
    """An Aggregate's top table read as a Counter of keys: the rows counted
    since the last read are decoded into it first."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, agg, owner=None):
        if agg is None:
            return self
        for kind in TABLES[self.name]:
            agg._decode(kind)
        return agg._tables[self.name]


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
    # the top tables (TABLES), read as Counters of keys
    methods, netns, processes, owners = _Table(), _Table(), _Table(), _Table()
    who_cgroups, local_ports, remote_peers = _Table(), _Table(), _Table()
    oom_callers, shift, mem_classes, drop_causes = _Table(), _Table(), _Table(), _Table()

    def __init__(self, header: dict):
        self.header = header
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None
        self.by_family: Counter = Counter()
        self.by_verdict: Counter = Counter()          # (family, verdict bits)
        self.per_second: Counter = Counter()          # (family, second)
        self.oom_shift_by_sec: Dict[int, int] = {}    # second -> highest shift decided
        self.orphans_at_decision: Counter = Counter()  # bucketed
        # the top tables: rows counted by kind (ROWS), and the keys they were decoded to
        self._rows: Dict[str, Counter] = {k: Counter() for k in ROWS}
        self._tables: Dict[str, Counter] = {t: Counter() for t in TABLES}
        self.names = Names()                          # cgroup ids -> paths, from cgroups blocks
        self.peaks = {k: Peak() for k in ("orphans", "orphans_shifted", "memory_pages", "memory_over",
                                          "tw", "tw_sampled")}
        self.snapshot_series: Dict[int, dict] = {}    # second -> figures
        self.snapshots = 0
        self.snap_first_ns: Optional[int] = None    # the first and last /proc snapshot
        self.snap_last_ns: Optional[int] = None
        self.tcpext_first: Optional[dict] = None
        self.tcpext_last: Optional[dict] = None
        self.first_snapshot: Optional[dict] = None
        self.last_snapshot: Optional[dict] = None
        self.holders: List[dict] = []
        self.holder_processes: Counter = Counter()   # comm -> max bytes held
        self.counters: Optional[List[int]] = None
        self.loss: Counter = Counter()
        #: calls the kernel recorded as missed by the programs (not counted at all)
        self.missed: Counter = Counter()
        self.trailer: Optional[dict] = None
        self.damage: List[str] = []
        self.events = 0
        self.detail_sampled = 1       # > 1: the live view's details fold in 1 record in this many

    # ---------------------------------------------------------- feeding
    def add_events(self, records: bytes, count: int, stride: int = ev.STRIDE, skip: int = ev.FRAME,
                   detail_every: int = 1) -> None:
        """Fold a buffer of records in, a column at a time: constant columns
        are counted once, the others with Counter in C, and nothing is kept per
        event (docs/performance.md has the cost).

        Counts by family, verdict and second are always exact. A live view
        under a storm passes `detail_every` > 1: the top tables, peaks and
        distributions then fold in one record in that many (reports never do)."""
        if not count:
            return
        # a buffer of whole strides (the last record's padding may be missing)
        records = bytes(records[:count * stride]).ljust(count * stride, b"\0")
        cols = Columns(records, count, stride, skip)
        ts = cols.col("ts_ns")
        lo, hi = min(ts), max(ts)
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        self.events += count
        if lo // _NS == hi // _NS:
            cols.second = lo // _NS
            sec: Tuple[Optional[int], Optional[list]] = (cols.second, None)
        else:
            sec = (None, list(map(operator.floordiv, ts, repeat(_NS, count))))
        fam, verdict = cols.part("family"), cols.part("verdict")
        if fam[1] is None or verdict[1] is None:
            count_keys(self.by_family, [fam], count)
            count_keys(self.by_verdict, [fam, verdict], count)
            count_keys(self.per_second, [fam, sec], count)
        else:
            # mixed families (a busy host): the (family, verdict) pairs are
            # counted once, as packed ints, and the families from them
            pairs = cols.pairs("family", "verdict")
            self.by_verdict.update(pairs)
            by_family: Counter = Counter()
            for (family, _), k in pairs.items():
                by_family[family] += k
            self.by_family.update(by_family)
            if sec[1] is None:
                for family, k in by_family.items():
                    self.per_second[family, sec[0]] += k
            else:
                count_keys(self.per_second, [fam, sec], count)
        if detail_every > 1 and count > detail_every:
            # every detail_every-th record: the same buffer read with a longer
            # stride, no copy
            second = cols.second
            cols = Columns(records, -(-count // detail_every), stride * detail_every, skip)
            cols.second = second
            self.detail_sampled = detail_every
        self._add_details(cols)

    def _add_details(self, cols: "Columns") -> None:
        n = cols.n
        # one shared row where several tables vary; where one or two do, those
        # alone and the constant ones once (a batch with one process, say)
        varying = [t for t, fields in _DETAIL_FIELDS.items()
                   if any(cols.const(*f) is None for f in fields)]
        if len(varying) > 2:
            self._count("detail", cols)
        else:
            for t, fields in _DETAIL_FIELDS.items():
                if t in varying:
                    self._count(t, cols)
                else:
                    values = [cols.const(*f) for f in fields]
                    self._tables[t][values[0] if len(values) == 1 else tuple(values)] += n
        self._add_memory(cols)
        fam_bytes = cols.records[cols.skip + _OFF["family"]::cols.stride]
        for family, add in ((ev.OOM_CHECK, self._add_oom), (ev.TW_OVERFLOW, self._add_tw),
                            (ev.MEM_EXCEED, self._add_mem_exceed), (ev.MEM_DROP, self._add_mem_drop)):
            k = fam_bytes.count(family)
            if k:
                add(cols if k == n else cols.only(fam_bytes.translate(FAMILY_MASKS[family])))

    def _count(self, kind: str, cols: "Columns") -> None:
        rows = self._rows[kind]
        count_rows(rows, cols, ROWS[kind][0])
        if len(rows) > ROWS_MAX:
            self._decode(kind)

    def _decode(self, kind: str) -> None:
        """The rows of `kind` counted so far, decoded into their tables' keys."""
        rows = self._rows[kind]
        if not rows:
            return
        key, split = ROWS[kind]
        tables = self._tables
        for row, n in rows.items():
            for table, k in split(key.decode(row)):
                tables[table][k] += n
        rows.clear()

    def _add_memory(self, c: "Columns") -> None:
        mem, high = c.part("memory_allocated"), c.part("tcp_mem", 16)
        if mem[1] is None:
            top, i = mem[0], 0
        else:
            top = max(mem[1])
            i = mem[1].index(top)
        if top < 0:
            return
        self.peaks["memory_pages"].offer(top, c.at("ts_ns", i), tcp_mem2=c.at("tcp_mem", i, 16))
        # the furthest over the hard limit in force at the moment (percent)
        if mem[1] is None and high[1] is None:
            v, i = _percent(mem[0], high[0]), 0
        elif high[1] is None and high[0] > 0:
            # one limit: the most pages are the furthest over; the peak is the
            # first record that far over, the fewest pages that are v percent
            v = _percent(top, high[0])
            least = -(-v * high[0] // 100)
            i = next(compress(itertools.count(), map(operator.ge, mem[1], repeat(least))))
        else:
            pages = mem[1] if mem[1] is not None else [mem[0]] * c.n
            limits = high[1] if high[1] is not None else [high[0]] * c.n
            if min(pages) >= 0 and min(limits) > 0:
                over = list(map(operator.floordiv, map(operator.mul, pages, repeat(100)), limits))
            else:
                over = list(map(_percent, pages, limits))
            v = max(over)
            i = over.index(v)
        if v >= 0:
            self.peaks["memory_over"].offer(v, c.at("ts_ns", i), pages=c.at("memory_allocated", i),
                                            tcp_mem2=c.at("tcp_mem", i, 16))

    def _add_oom(self, c: "Columns") -> None:
        n = c.n
        shift, orphans = c.part("shift"), c.part("orphans")
        self._count("oom_callers", c)
        self._count("shift", c)
        # the highest shift decided in each second
        if c.second is not None:
            seconds = [(c.second, shift[0] if shift[1] is None else max(shift[1]))]
        else:
            secs = map(operator.floordiv, c.col("ts_ns"), repeat(_NS))
            seconds = set(zip(secs, shift[1] if shift[1] is not None else repeat(shift[0])))
        for sec, s in seconds:
            if s > self.oom_shift_by_sec.get(sec, -1):
                self.oom_shift_by_sec[sec] = s
        known = Counter(orphans[1]) if orphans[1] is not None else Counter({orphans[0]: n})
        known.pop(-1, None)
        buckets = _BUCKETS
        for o, k in known.items():
            b = buckets.get(o)
            if b is None:
                if len(buckets) > 65536:          # bounded, whatever the counts met
                    buckets.clear()
                b = buckets[o] = _bucket(o)
            self.orphans_at_decision[b] += k
        if not known:
            return
        if orphans[1] is None:
            i = 0
        else:
            i = orphans[1].index(max(orphans[1]))
        self.peaks["orphans"].offer(c.at("orphans", i), c.at("ts_ns", i), source="exact",
                                    limit=c.at("max_orphans", i))
        if orphans[1] is None and shift[1] is None:
            v, i = _shifted(orphans[0], shift[0]), 0
        else:
            ol = orphans[1] if orphans[1] is not None else [orphans[0]] * n
            sl = shift[1] if shift[1] is not None else [shift[0]] * n
            if min(ol) >= 0 and min(sl) >= 0:
                shifted = list(map(operator.lshift, ol, sl))
            else:
                shifted = list(map(_shifted, ol, sl))
            v = max(shifted)
            i = shifted.index(v)
        self.peaks["orphans_shifted"].offer(v, c.at("ts_ns", i), shift=c.at("shift", i),
                                            orphans=c.at("orphans", i), max_orphans=c.at("max_orphans", i))

    def _add_mem_exceed(self, c: "Columns") -> None:
        self._count("mem_classes", c)

    def _add_mem_drop(self, c: "Columns") -> None:
        # (verdict, mem_class, derived): the site and the cause, for the diagnosis
        self._count("drop_causes", c)

    def _add_tw(self, c: "Columns") -> None:
        tw = c.part("tw_count")
        i = 0 if tw[1] is None else tw[1].index(max(tw[1]))
        self.peaks["tw"].offer(c.at("tw_count", i), c.at("ts_ns", i), limit=c.at("max_tw_buckets", i),
                               netns=c.at("netns", i))

    def add_snapshot(self, snap: dict) -> None:
        self.snapshots += 1
        if self.first_snapshot is None:
            self.first_snapshot = snap
        self.last_snapshot = snap
        ts = snap.get("ts_ns", 0)
        if ts:
            self.snap_first_ns = ts if self.snap_first_ns is None else min(self.snap_first_ns, ts)
            self.snap_last_ns = ts if self.snap_last_ns is None else max(self.snap_last_ns, ts)
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
            self.peaks["orphans"].offer(tcp["orphan"], ts, source="sampled", limit=limits.get("tcp_max_orphans"))
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
        self.missed.update(block.get("missed", {}))

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
        else:
            self.add_json_block(block.type, block.json() if block.type in tf.JSON_BLOCKS else None)

    def add_json_block(self, btype: int, obj) -> None:
        from . import tracefile as tf
        add = {tf.SNAPSHOT: self.add_snapshot, tf.HOLDERS: self.add_holders, tf.COUNTERS: self.add_counters,
               tf.LOSS: self.add_loss, tf.TRAILER: self.set_trailer, tf.CGROUPS: self.names.learn}.get(btype)
        if add:
            add(obj)

    def merge_events(self, other: "Aggregate") -> None:
        """Add what `other` folded in from events (blocks read elsewhere, in a
        later part of the file: on ties the earlier peak stays)."""
        for name in ("by_family", "by_verdict", "per_second", "orphans_at_decision"):
            getattr(self, name).update(getattr(other, name))
        for kind, rows in other._rows.items():
            self._rows[kind].update(rows)
            if len(self._rows[kind]) > ROWS_MAX:
                self._decode(kind)
        for name, table in other._tables.items():
            self._tables[name].update(table)
        self.names._known.update(other.names._known)
        self.names.changes += 1
        for sec, s in other.oom_shift_by_sec.items():
            if s > self.oom_shift_by_sec.get(sec, -1):
                self.oom_shift_by_sec[sec] = s
        for name, p in other.peaks.items():
            if p.value is not None:
                self.peaks[name].offer(p.value, p.ts_ns, **p.extra)
        if other.first_ns is not None:
            self.first_ns = other.first_ns if self.first_ns is None else min(self.first_ns, other.first_ns)
            self.last_ns = other.last_ns if self.last_ns is None else max(self.last_ns, other.last_ns)
        self.events += other.events
        self.detail_sampled = max(self.detail_sampled, other.detail_sampled)


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


_BUCKETS: Dict[int, int] = {}       # orphan count -> its bucket, as met


def _bucket(n: int) -> int:
    """Power-of-two bucket floor (0, 1, 2, 4, 8, ...) for distributions."""
    return 0 if n <= 0 else 1 << (n.bit_length() - 1)


def top(counter: Counter, n: int) -> List[Tuple]:
    return counter.most_common(n)
