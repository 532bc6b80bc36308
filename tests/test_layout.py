"""The Python mirror of the event layout against the compiled object's BTF,
and the mirrored constants against the header's text."""
import os
import re

from conftest import ROOT
from tracer.model import events as ev
from tracer.kernel.btf import Btf
from tracer.kernel.loader import OBJECT

HEADER = os.path.join(ROOT, "bpf", "tcpoom.h")


def test_event_layout_matches_btf():
    with Btf.from_file(OBJECT) as btf:
        size, members = btf.struct_layout("tcpoom_event")
    assert size == ev.EVENT_SIZE
    mirror = ev.layout_offsets()
    assert [name for name, _ in members] == [name for name, _ in ev.LAYOUT]
    for name, offset in members:
        assert mirror[name] == offset, name


def test_counters_layout_matches_btf():
    with Btf.from_file(OBJECT) as btf:
        size, _ = btf.struct_layout("tcpoom_counters")
    assert size == ev.CNT_MAX * 8


def _header_constants():
    text = open(HEADER).read()
    consts = {}
    for name, value in re.findall(r"#define\s+(\w+)\s+\(?([0-9xa-fA-F]+u?(?:\s*<<\s*\d+)?)\)?", text):
        consts[name] = eval(value.replace("u", ""))
    for body in re.findall(r"enum \w+ \{(.*?)\};", text, re.S):
        value = -1
        for line in body.splitlines():
            m = re.match(r"\s*(\w+)\s*(?:=\s*(\d+))?,", line)
            if m:
                value = int(m.group(2)) if m.group(2) else value + 1
                consts[m.group(1)] = value
    return consts


def test_constants_match_header():
    c = _header_constants()
    for name in ("VERDICT_ORPHANS", "VERDICT_MEMORY", "VERDICT_KILLED", "VERDICT_RESET",
                 "VERDICT_SHIFT_MIN", "VERDICT_SEND", "VERDICT_RECV", "VERDICT_ENTER",
                 "VERDICT_LEAVE", "VERDICT_CAUSE_LIMIT", "VERDICT_CAUSE_ALLOC", "FIELD_SHIFT", "FIELD_ORPHANS", "FIELD_MAX_ORPHANS",
                 "FIELD_MEMORY", "FIELD_TCP_MEM", "FIELD_TW_COUNT", "FIELD_MAX_TW",
                 "FIELD_VERDICT", "FIELD_CALLER", "FIELD_SOCKET", "FIELD_PRESSURE"):
        assert getattr(ev, name) == c[name], name
    assert c["FAMILY_OOM_CHECK"] == ev.OOM_CHECK and c["FAMILY_PRESSURE"] == ev.PRESSURE
    assert c["METHOD_TP_BTF"] == ev.TP_BTF and c["METHOD_SAMPLED"] == ev.SAMPLED
    assert c["CALLER_CLOSE"] == ev.CALLER_CLOSE and c["CALLER_TIMER"] == ev.CALLER_TIMER
    for name in ("FIELD_MEM_CLASS", "FIELD_OWNER", "OWNER_NONE", "OWNER_EXACT", "OWNER_LAST_KNOWN",
                 "OWNER_CONTEXT", "MEM_CLASS_UNKNOWN", "MEM_CLASS_MEMCG", "MEM_CLASS_FAIR_SHARE",
                 "MEM_CLASS_HARD"):
        assert getattr(ev, name) == c[name], name
    for name in ("CNT_OOM_CHECK", "CNT_TW_OVERFLOW", "CNT_MEM_EXCEED", "CNT_FILTERED",
                 "CNT_LOST_BASE", "CNT_UNPAIRED_BASE", "CNT_MAX", "CNT_PRESSURE_LEAVE", "CNT_OOM_CALLS",
                 "CNT_TW_CANDIDATES", "CNT_TW_CANCELLED", "CNT_TW_UNCHECKED", "TW_SETTLE_MS",
                 "FAMILY_MAX", "CNT_MEM_DROP", "CNT_DROP_RCVQ", "CNT_DROP_OFO", "CNT_DROP_BACKLOG",
                 "CNT_DROP_PRUNE", "CNT_DROP_UNSPLIT", "VERDICT_DROP_RCVQ", "VERDICT_DROP_OFO",
                 "VERDICT_DROP_PRUNE", "VERDICT_DROP_BACKLOG", "VERDICT_DROP_RCVBUF"):
        assert getattr(ev, name) == c[name], name
    assert c["FAMILY_MEM_DROP"] == ev.MEM_DROP


def test_counter_slots_do_not_clash():
    """lost (17..21), the TIME_WAIT inference's (24..26), unpaired returns
    (28..32) and mem_drop's (33..38) each have their own slots below CNT_MAX
    (issue 13 merge)."""
    lost = {ev.CNT_LOST_BASE + f for f in ev.FAMILIES}
    unpaired = {ev.CNT_UNPAIRED_BASE + f for f in ev.FAMILIES}
    tw = {ev.CNT_TW_CANDIDATES, ev.CNT_TW_CANCELLED, ev.CNT_TW_UNCHECKED}
    fixed = {i for i in ev.COUNTER_NAMES if i < ev.CNT_LOST_BASE}
    drops = {ev.CNT_MEM_DROP, ev.CNT_DROP_RCVQ, ev.CNT_DROP_OFO, ev.CNT_DROP_BACKLOG,
             ev.CNT_DROP_PRUNE, ev.CNT_DROP_UNSPLIT}
    assert unpaired == {28, 29, 30, 31, 32} and tw == {24, 25, 26}
    groups = [lost, unpaired, tw, fixed, drops]
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    assert max(set().union(*groups)) < ev.CNT_MAX


def test_pack_decode_round_trip():
    e = ev.Event.make(ts_ns=5, family=ev.OOM_CHECK, method=ev.TP_BTF, shift=2, orphans=7,
                      tcp_mem=(1, 2, 3), comm=b"nginx", af=2, saddr=bytes([127, 0, 0, 1]) + b"\0" * 12,
                      sport=80, daddr=bytes([10, 0, 0, 2]) + b"\0" * 12, dport=5555)
    d = ev.Event.decode(e.pack())
    assert (d.shift, d.orphans, d.tcp_mem, d.comm_str) == (2, 7, (1, 2, 3), "nginx")
    assert d.local == "127.0.0.1:80" and d.remote == "10.0.0.2:5555"


def test_owner_fields_round_trip():
    e = ev.Event.make(family=ev.MEM_EXCEED, pid=0, comm=b"swapper/1", owner_pid=4242,
                      owner_comm=b"reader", owner_fidelity=ev.OWNER_LAST_KNOWN, owner_cgroup=77,
                      sk_cgroup=66, memcg=55, mem_class=ev.MEM_CLASS_MEMCG, memcg_usage=10,
                      memcg_limit=12)
    d = ev.Event.decode(e.pack())
    assert (d.who_pid, d.who_comm, d.who_cgroup) == (4242, "reader", 77)
    assert d.owner_fidelity_name == "last-known" and d.mem_class_name == "memcg"
    assert ev.Event.make(pid=9, comm=b"x").who_pid == 9       # no owner: the context


def _object_contents(path):
    """(program names, map names) of a compiled object, opened, not loaded."""
    from tracer.kernel import libbpf
    l = libbpf.lib()
    obj = l.bpf_object__open_file(path.encode(), None)
    assert obj, path
    try:
        progs = {l.bpf_program__name(p).decode() for p in libbpf.iter_programs(obj)}
        maps = {l.bpf_map__name(m).decode() for m in libbpf.iter_maps(obj)}
    finally:
        l.bpf_object__close(obj)
    return progs, maps


def test_the_production_object_carries_no_benchmark_and_the_bench_object_shares_its_maps():
    from tracer.kernel.loader import BENCH_OBJECT, BENCH_SHARED_MAPS
    progs, maps = _object_contents(OBJECT)
    assert not any(p.startswith("bench") for p in progs) and "bench_perf" not in maps
    assert "check_oom_fexit" in progs and "exceed_raw" in progs
    bench_progs, bench_maps = _object_contents(BENCH_OBJECT)
    assert bench_progs == {"bench_sys_enter", "bench_perf_sys_enter"}
    assert set(BENCH_SHARED_MAPS) <= bench_maps and set(BENCH_SHARED_MAPS) <= maps
