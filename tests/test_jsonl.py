"""`trace --json` writes each event through render/jsonl.py without building the
schema's mapping: its text must be exactly json.dumps(event_schema.record(...)),
the reference, for every kind of record."""
import json
import random

import pytest

from tracer.model import event_schema as schema
from tracer.model import events as ev
from tracer.model.clock import Clock
from tracer.model.containers import V1_MEMORY, V2, Names
from tracer.model.samples import Sampled
from tracer.render import jsonl
from tracer.render.jsonl import JsonLines

ODD_COMMS = [b"", b"nginx", b'a"b\\c', b"\x01\x02\x1f\x7f", b"\xff\xfe\x80bad", b"caf\xc3\xa9",
             b"\xe2\x82\xac\xf0\x9f\x92\xa9", b"tab\there\nnl", b"x" * 16, b"kworker/1:0\0junk",
             b"</script>", b"\0leading-nul"]
# a few bit sets each, plus random ones: every record shape gets its own
# generated function, so records are made to share shapes as a storm's do
VERDICTS = [0, ev.VERDICT_ORPHANS | ev.VERDICT_KILLED | ev.VERDICT_RESET, ev.VERDICT_MEMORY | ev.VERDICT_SHIFT_MIN,
            ev.VERDICT_SEND, ev.VERDICT_RECV, ev.VERDICT_ENTER | ev.VERDICT_CAUSE_LIMIT,
            ev.VERDICT_LEAVE, ev.VERDICT_ENTER | ev.VERDICT_CAUSE_ALLOC, 0xffff,
            ev.VERDICT_DROP_RCVBUF, ev.VERDICT_DROP_PRUNE, ev.VERDICT_DROP_BACKLOG] + \
    [random.Random(i).randrange(2**16) for i in range(4)]
MASKS = [0, 2**13 - 1, ev.FIELD_MEMORY | ev.FIELD_TCP_MEM | ev.FIELD_SOCKET, ev.FIELD_SHIFT | ev.FIELD_VERDICT,
         ev.FIELD_MEM_CLASS | ev.FIELD_OWNER, ev.FIELD_TW_COUNT | ev.FIELD_MAX_TW | ev.FIELD_ORPHANS] + \
    [random.Random(i).randrange(2**13) for i in range(4)]
SIGNED = ("memory_allocated", "tcp_mem0", "tcp_mem1", "tcp_mem2", "pressure_since", "orphans",
          "max_orphans", "shift", "wmem_queued", "rmem_alloc", "sndbuf", "rcvbuf", "tw_count",
          "max_tw_buckets", "memcg_usage", "memcg_limit")


def _names():
    n = Names()
    for cgid, path, label in ((7, "/system.slice/nginx.service", "nginx.service"),
                              (8, '/odd/"quoted"\\path\x01', None),
                              (9, "/", "/"), (10, "/caf\u00e9/\u2603", "\u2603")):
        ident = {"path": path}
        if label:
            ident["label"] = label
        n._store(V2, cgid, ident)
        n._store(V1_MEMORY, cgid, ident)
    return n


def _record(rng: random.Random) -> ev.Event:
    fam = rng.choice([ev.OOM_CHECK, ev.TW_OVERFLOW, ev.MEM_EXCEED, ev.PRESSURE, ev.MEM_DROP] * 4 + [0, 6, 200])
    af = rng.choice([2, 2, 10, 10, 0, 1])
    if af == 10:
        addr = lambda: rng.choice([b"\0" * 15 + b"\1", b"\0" * 10 + b"\xff\xff" + bytes(rng.randrange(256) for _ in range(4)),  # noqa: E731
                                   bytes(rng.randrange(256) for _ in range(16)), b"\xfe\x80" + b"\0" * 13 + b"\2"])
    else:
        addr = lambda: bytes(rng.randrange(256) for _ in range(4)) + bytes(rng.randrange(2) for _ in range(12))  # noqa: E731
    f = dict(ts_ns=rng.choice([0, 1, 999_999_999, 10**9, rng.randrange(2**63)]), family=fam,
             method=rng.choice([1, 2, 3, 4, 5, 0, 9]), cpu=rng.randrange(2**16), pid=rng.randrange(2**32),
             tid=rng.randrange(2**32), comm=rng.choice(ODD_COMMS).ljust(16, b"\0")[:16], netns=rng.randrange(2**32),
             af=af, sport=rng.randrange(2**16), dport=rng.randrange(2**16), state=rng.randrange(14),
             caller=rng.randrange(4), saddr=addr(), daddr=addr(), verdict=rng.choice(VERDICTS),
             reason=rng.choice([0, 0, 1, 5]), exact=rng.choice(MASKS), derived=rng.choice(MASKS),
             owner_fidelity=rng.choice([0, 1, 2, 3, 7]), mem_class=rng.choice([0, 1, 2, 3, 9]),
             owner_pid=rng.randrange(2**32), owner_uid=rng.randrange(2**32), sk_uid=rng.randrange(2**32),
             owner_comm=rng.choice(ODD_COMMS).ljust(16, b"\0")[:16],
             owner_cgroup=rng.choice([0, 7, 8, 9, 10, 12345]), sk_cgroup=rng.choice([0, 7, 99]),
             cgroup=rng.choice([0, 8]), memcg=rng.choice([0, 7, 8, 10, 77]))
    for name in SIGNED:
        f[name] = rng.choice([-1, -1, 0, 1, -2, rng.randrange(-2**31, 2**31)])
    for name in ("memory_allocated", "pressure_since", "memcg_usage", "memcg_limit"):    # 64-bit
        if rng.random() < 0.2:
            f[name] = rng.randrange(-2**63, 2**63)
    f["tcp_mem"] = (f.pop("tcp_mem0"), f.pop("tcp_mem1"), f.pop("tcp_mem2"))
    return ev.Event.make(**f)


def _sampled(kind: str) -> Sampled:
    s = Sampled()
    if kind == "some":
        s.add(0, 301, 0)
        s.add(2**62, 5, 131072)
    elif kind == "partial":
        s.add(10**9, None, 4096)
    return s


@pytest.mark.parametrize("sampled", ["none", "some", "partial"])
@pytest.mark.parametrize("with_names", [False, True])
def test_the_text_is_json_dumps_of_the_schema_for_varied_records(sampled, with_names):
    rng = random.Random(f"{sampled}-{with_names}")
    clock, s = Clock(rng.randrange(2**60)), _sampled(sampled)
    names = _names() if with_names else None
    fast = JsonLines(clock, s, names)
    families = set()
    for _ in range(1000):
        e = _record(rng)
        want = json.dumps(schema.record(e, clock, s, names))
        assert fast(e) == want, (e.family, e.af, e.comm)
        families.add((e.family, e.af))
    assert {(f, af) for f in ev.FAMILIES for af in (0, 1, 2, 10)} <= families


def test_the_same_record_twice_and_after_the_tables_fill(monkeypatch):
    monkeypatch.setattr(jsonl, "_CACHE_MAX", 3)
    rng = random.Random(7)
    clock, s = Clock(0), _sampled("some")
    fast = JsonLines(clock, s, _names())
    recs = [_record(rng) for _ in range(300)]
    for e in recs + recs:
        assert fast(e) == json.dumps(schema.record(e, clock, s, fast.names))
    assert len(fast._shapes) <= 3 and len(fast._comms) <= 3


def test_a_cgroup_found_later_is_named_from_then_on():
    clock, s, names = Clock(0), Sampled(), Names()
    e = ev.Event.make(ts_ns=5, family=ev.TW_OVERFLOW, method=ev.TP_BTF, owner_fidelity=ev.OWNER_EXACT,
                      owner_cgroup=42, af=2, saddr=bytes(16), daddr=bytes(16))
    fast = JsonLines(clock, s, names)
    assert json.loads(fast(e))["cgroup"] is None
    names._store(V2, 42, {"path": "/a.slice/b.service", "label": "b.service"})
    d = json.loads(fast(e))
    assert d["cgroup"] == "/a.slice/b.service" and d["container"] == "b.service"
    assert fast(e) == json.dumps(schema.record(e, clock, s, names))


def test_trace_json_batch_keeps_the_wanted_families_and_stops_at_count():
    from tracer.cli.commands.trace import _json_lines
    rng = random.Random(3)
    recs = [_record(rng) for _ in range(300)]
    payload = ev.frame_all([e.pack() for e in recs])
    clock, s = Clock(0), _sampled("some")
    fast = JsonLines(clock, s, None)
    wanted = {ev.TW_OVERFLOW, ev.OOM_CHECK}
    want = [json.dumps(schema.record(e, clock, s)) for e in recs if e.family in wanted]
    assert _json_lines(payload, len(recs), len(recs), wanted, fast.values) == want
    assert _json_lines(payload, len(recs), 7, wanted, fast.values) == want[:7]
