"""The column aggregation against a per-record reference: the same counts,
tables and peaks, whether columns are constant, varying or mixed across
families, and when one buffer spans several seconds."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from tracer.model import events as ev
from tracer.model.aggregate import Aggregate, _bucket

NS = 1_000_000_000


def reference(records: list) -> dict:
    """What an aggregation must find, one decoded record at a time."""
    out = {k: Counter() for k in ("family", "verdict", "second", "method", "netns", "process", "port",
                                  "peer", "shift", "caller", "orphans")}
    shift_by_sec: dict = {}
    peaks: dict = {}

    def offer(name, value, ts, **extra):
        if value is not None and value >= 0 and (name not in peaks or value > peaks[name][0]):
            peaks[name] = (value, ts, extra)

    for e in records:
        out["family"][e.family] += 1
        out["verdict"][e.family, e.verdict] += 1
        out["second"][e.family, e.ts_ns // NS] += 1
        out["method"][e.family, e.method] += 1
        out["netns"][e.netns] += 1
        comm = e.comm.ljust(16, b"\0")
        out["process"][e.pid, int.from_bytes(comm[:8], "little"), int.from_bytes(comm[8:], "little")] += 1
        out["port"][e.af, e.sport] += 1
        out["peer"][e.af, int.from_bytes(e.daddr[:8], "little"), int.from_bytes(e.daddr[8:], "little")] += 1
        if e.memory_allocated >= 0:
            offer("memory_pages", e.memory_allocated, e.ts_ns, tcp_mem2=e.tcp_mem2)
        if e.memory_allocated >= 0 and e.tcp_mem2 > 0:
            offer("memory_over", e.memory_allocated * 100 // e.tcp_mem2, e.ts_ns,
                  pages=e.memory_allocated, tcp_mem2=e.tcp_mem2)
        if e.family == ev.OOM_CHECK:
            out["shift"][e.shift] += 1
            out["caller"][e.caller] += 1
            sec = e.ts_ns // NS
            shift_by_sec[sec] = max(shift_by_sec.get(sec, -1), e.shift)
            if e.orphans >= 0:
                out["orphans"][_bucket(e.orphans)] += 1
                offer("orphans", e.orphans, e.ts_ns, source="exact", limit=e.max_orphans)
                if e.shift >= 0:
                    offer("orphans_shifted", e.orphans << e.shift, e.ts_ns, shift=e.shift,
                          orphans=e.orphans, max_orphans=e.max_orphans)
        if e.family == ev.TW_OVERFLOW:
            offer("tw", e.tw_count, e.ts_ns, limit=e.max_tw_buckets, netns=e.netns)
    out["shift_by_sec"] = {s: v for s, v in shift_by_sec.items() if v >= 0}
    out["peaks"] = peaks
    return out


def found(agg: Aggregate) -> dict:
    return {
        "family": agg.by_family, "verdict": agg.by_verdict, "second": agg.per_second,
        "method": agg.methods, "netns": agg.netns, "process": agg.processes, "port": agg.local_ports,
        "peer": agg.remote_peers, "shift": agg.shift, "caller": agg.oom_callers,
        "orphans": agg.orphans_at_decision, "shift_by_sec": agg.oom_shift_by_sec,
        "peaks": {k: (p.value, p.ts_ns, p.extra) for k, p in agg.peaks.items() if p.value is not None},
    }


def make_records(rng: random.Random, n: int, vary: set, families=(ev.OOM_CHECK,), t0=5 * NS, span=NS // 2):
    def pick(name, const, choices):
        return rng.choice(choices) if name in vary else const

    records = []
    for i in range(n):
        fam = rng.choice(families)
        records.append(ev.Event.make(
            ts_ns=t0 + rng.randrange(span), family=fam, method=pick("method", 3, [1, 2, 3]),
            verdict=pick("verdict", 5, [1, 2, 5, 9]), netns=pick("netns", 4026531840, [1, 2, 3]),
            pid=pick("pid", 42, [42, 43, 44]), comm=pick("comm", b"nginx", [b"nginx", b"a-very-long-name", b"x"]),
            af=pick("af", 2, [2, 10]), sport=pick("sport", 80, list(range(1000, 1100))),
            daddr=pick("daddr", b"\x7f\0\0\x01" + b"\0" * 12, [bytes([j]) * 16 for j in range(5)]),
            memory_allocated=(rng.choice([3990, 3996, 4000, 4003]) if "memory ties" in vary
                              else pick("memory", 1000, [-1, 0, 50, 1000, 5000])),
            tcp_mem=(1, 2, pick("tcp_mem", 400, [-1, 0, 400, 800])),
            shift=pick("shift", 1, [-1, 0, 1, 2, 3]), orphans=pick("orphans", 700, [-1, 0, 5, 700, 1023]),
            max_orphans=pick("max_orphans", 1024, [0, 1024]), caller=pick("caller", 2, [0, 1, 2]),
            tw_count=pick("tw", 5, [0, 5, 9]), max_tw_buckets=pick("tw_limit", 5, [5, 6])))
    return records


CASES = {
    "all constant": (set(), (ev.OOM_CHECK,), NS // 2),
    "ports vary": ({"sport"}, (ev.OOM_CHECK,), NS // 2),
    "everything varies": ({"method", "verdict", "netns", "pid", "comm", "af", "sport", "daddr", "memory",
                           "tcp_mem", "shift", "orphans", "max_orphans", "caller", "tw", "tw_limit"},
                          (ev.OOM_CHECK,), NS // 2),
    "mixed families": ({"sport", "orphans", "tw"}, (ev.OOM_CHECK, ev.TW_OVERFLOW, ev.MEM_EXCEED), NS // 2),
    "several seconds": ({"shift", "orphans"}, (ev.OOM_CHECK, ev.TW_OVERFLOW), 4 * NS),
    "unknown figures": ({"memory", "tcp_mem", "orphans", "shift"}, (ev.OOM_CHECK,), NS // 2),
    # several page counts at the same percent of one limit: the first record that far over
    "memory ties": ({"memory ties", "pid", "comm"}, (ev.OOM_CHECK,), NS // 2),
    # families and verdicts both vary: the (family, verdict) pairs are
    # counted packed (Columns.pairs), the families and seconds from them
    "families and verdicts": ({"verdict", "sport", "pid"}, tuple(ev.FAMILIES), NS // 2),
    "families and verdicts, several seconds": ({"verdict", "shift"}, tuple(ev.FAMILIES), 4 * NS),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_columns_match_the_per_record_reference(case):
    vary, families, span = CASES[case]
    rng = random.Random(case)
    agg = Aggregate({})
    records = []
    for n in (1, 7, 500, 2000):
        batch = make_records(rng, n, vary, families, span=span)
        records += batch
        agg.add_events(ev.frame_all([e.pack() for e in batch]), n)
    want = reference(records)
    assert found(agg) == want
    # in the order first met, as a per-record count has them (ties in top
    # tables keep it)
    for name, counter in (("family", agg.by_family), ("verdict", agg.by_verdict), ("second", agg.per_second)):
        assert list(counter) == list(want[name])
    assert agg.events == len(records)
    assert agg.first_ns == min(e.ts_ns for e in records)
    assert agg.last_ns == max(e.ts_ns for e in records)


def test_sampled_details_keep_exact_counts():
    rng = random.Random(7)
    batch = make_records(rng, 4000, {"sport", "verdict"}, (ev.OOM_CHECK, ev.TW_OVERFLOW))
    agg = Aggregate({})
    agg.add_events(ev.frame_all([e.pack() for e in batch]), len(batch), detail_every=10)
    want = reference(batch)
    assert agg.by_family == want["family"]
    assert agg.by_verdict == want["verdict"]
    assert agg.per_second == want["second"]
    assert agg.detail_sampled == 10
    assert sum(agg.local_ports.values()) == 400


def test_every_top_table_counts_what_a_per_record_count_finds(monkeypatch):
    """The top tables are counted on packed rows and decoded when read
    (columns.count_rows): each must hold what counting the decoded records
    one at a time gives, also when the distinct rows pass ROWS_MAX (decoded
    on the way) and when two aggregates are merged."""
    from tracer.model import aggregate
    monkeypatch.setattr(aggregate, "ROWS_MAX", 50)
    rng = random.Random(14)
    records = []
    for i in range(3000):
        fam = rng.choice(tuple(ev.FAMILIES))
        records.append(ev.Event.make(
            ts_ns=5 * NS + i, family=fam, method=rng.choice([1, 3]), verdict=rng.choice([1, 2, 6]),
            netns=rng.choice([1, 4026531840]), pid=rng.randrange(1, 40), comm=rng.choice([b"nginx", b"a-very-long-name"]),
            af=rng.choice([2, 10]), sport=rng.randrange(1000, 1030), daddr=bytes([rng.randrange(4)]) * 16,
            caller=rng.randrange(3), shift=rng.choice([-1, 0, 2]),
            owner_pid=rng.randrange(0, 30), owner_comm=rng.choice([b"", b"java", b"kubelet-worker-x"]),
            owner_cgroup=rng.choice([0, 7, 1 << 40]), memcg=rng.choice([0, 9, (1 << 63) + 5]),
            mem_class=rng.randrange(4), memcg_limit=rng.choice([-1, 0, 1 << 33]), derived=rng.choice([0, 3])))

    def words(b):
        b = b.ljust(16, b"\0")
        return int.from_bytes(b[:8], "little"), int.from_bytes(b[8:], "little")

    want = {t: Counter() for t in aggregate.TABLES}
    for e in records:
        want["methods"][e.family, e.method] += 1
        want["netns"][e.netns] += 1
        want["processes"][(e.pid, *words(e.comm))] += 1
        want["owners"][(e.owner_pid, *words(e.owner_comm))] += 1
        want["who_cgroups"][e.family, e.owner_cgroup, e.memcg] += 1
        want["local_ports"][e.af, e.sport] += 1
        want["remote_peers"][(e.af, *words(e.daddr))] += 1
        if e.family == ev.OOM_CHECK:
            want["oom_callers"][e.caller] += 1
            want["shift"][e.shift] += 1
        if e.family == ev.MEM_EXCEED:
            want["mem_classes"][e.mem_class, e.memcg, e.memcg_limit, e.derived] += 1
        if e.family == ev.MEM_DROP:
            want["drop_causes"][e.verdict, e.mem_class, e.derived] += 1
    halves = []
    for part in (records[:1700], records[1700:]):
        agg = Aggregate({})
        for at in range(0, len(part), 600):
            batch = part[at:at + 600]
            agg.add_events(ev.frame_all([e.pack() for e in batch]), len(batch))
        halves.append(agg)
    halves[0].merge_events(halves[1])
    for table, counts in want.items():
        assert getattr(halves[0], table) == counts, table
