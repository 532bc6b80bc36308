"""One event schema (tracer/model/event_schema.py, docs/events.md): JSONL, CSV and
`replay --json` carry the same fields, names and values for every family."""
import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import DATA, ROOT
from tracer.model import event_schema as schema
from tracer.model import events as ev
from tracer.model.clock import Clock
from tracer.model.samples import Sampled
from tracer.render.lines import as_json

SAMPLE = os.path.join(DATA, "sample.tcpoom")
V4 = lambda *b: bytes(b) + b"\0" * 12  # noqa: E731


def run(*args):
    r = subprocess.run([sys.executable, "-m", "tracer", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def exported():
    jl = [json.loads(x) for x in run("export", SAMPLE).splitlines()]
    rows = list(csv.DictReader(io.StringIO(run("export", SAMPLE, "--format", "csv"))))
    return jl, rows


def test_csv_and_jsonl_carry_the_same_values_for_every_field_of_every_family(exported):
    jl, rows = exported
    assert len(jl) == len(rows) == 137
    # the sample predates mem_drop: the synthetic test below covers it
    assert {j["family"] for j in jl} == set(ev.FAMILIES.values()) - {"mem_drop"}
    for j, r in zip(jl, rows):
        assert list(j) == list(r) == schema.NAMES
        for name in schema.NAMES:
            assert schema.from_csv(name, r[name]) == j[name], (j["family"], name)
    # the orphan figures (sampled on this kernel) are in both, not only in JSONL
    oom = [(j, r) for j, r in zip(jl, rows) if j["family"] == "oom_check"]
    assert oom and all(j["orphans"] is not None and r["orphans"] == str(j["orphans"]) and r["max_orphans"] != ""
                       for j, r in oom)


def test_replay_json_is_the_export(exported):
    jl, _ = exported
    lines = run("replay", "--speed", "0", "--json", SAMPLE).splitlines()
    assert [json.loads(x) for x in lines[:len(jl)]] == jl


def test_types_names_and_enums(exported):
    jl, _ = exported
    kinds = {"int": int, "str": str, "bool": bool, "list[str]": list, "list[int]": list, "map[str]": dict}
    for j in jl:
        for name, t in schema.FIELDS:
            assert j[name] is None or isinstance(j[name], kinds[t]), (name, j[name])
        assert j["af"] in ("inet", "inet6", None)
        assert all(v in ("exact", "derived", "sampled", "unavailable") for v in j["fidelity"].values())
    by = {j["family"]: j for j in jl}
    assert by["mem_exceed"]["verdict"] == ["recv"] and by["pressure"]["verdict"][0] in ("enter", "leave")
    assert by["oom_check"]["reason"] == "TCP_ABORT_ON_MEMORY" and by["oom_check"]["caller"] == "close"
    assert not {"side", "transition", "exact", "derived"} & set(by["mem_exceed"])


def test_every_family_synthetic_ipv6_and_unread_figures():
    recs = [ev.Event.make(ts_ns=1, family=f, method=ev.KPROBE, af=10, saddr=b"\0" * 15 + b"\1",
                          daddr=b"\0" * 15 + b"\1", sport=1, dport=2, state=1, verdict=v)
            for f, v in ((ev.OOM_CHECK, ev.VERDICT_MEMORY), (ev.TW_OVERFLOW, 0),
                         (ev.MEM_EXCEED, ev.VERDICT_SEND), (ev.PRESSURE, ev.VERDICT_ENTER),
                         (ev.MEM_DROP, ev.VERDICT_DROP_OFO | ev.VERDICT_DROP_RCVBUF))]
    for e in recs:
        d = as_json(e, Clock(0), Sampled())
        assert list(d) == schema.NAMES and d["af"] == "inet6" and d["local"] == "[::1]:1"
        row = schema.csv_row(d)
        for (name, _), cell in zip(schema.FIELDS, row):
            back = schema.from_csv(name, cell)
            assert back == d[name] or (d[name] is None and back in ([], {})), (e.family_name, name)


def test_the_document_lists_every_field_with_its_type():
    text = open(os.path.join(ROOT, "docs", "events.md")).read()
    rows = re.findall(r"^\| `(\w+)` \| ([\w\[\]]+) \|", text, re.M)
    assert rows == schema.FIELDS


def test_mem_drop_names_its_site_reason_and_cause():
    """A drop at a full receive buffer says so (advice: the reader, rcvbuf),
    and a refused charge carries mem_exceed's class instead."""
    full = ev.Event.make(ts_ns=1, family=ev.MEM_DROP, method=ev.TP_BTF, af=2,
                         verdict=ev.VERDICT_DROP_RCVQ | ev.VERDICT_DROP_RCVBUF, rmem_alloc=9000, rcvbuf=8192)
    d = as_json(full, Clock(0), Sampled())
    assert d["verdict"] == ["rcvq", "rcvbuf_full"] and d["reason"] == "PROTO_MEM"
    assert d["mem_class"] == "rcvbuf" and d["rmem_alloc"] == 9000
    hard = ev.Event.make(ts_ns=1, family=ev.MEM_DROP, method=ev.TP_BTF, verdict=ev.VERDICT_DROP_OFO,
                         mem_class=ev.MEM_CLASS_HARD, derived=ev.FIELD_MEM_CLASS)
    d = as_json(hard, Clock(0), Sampled())
    assert d["verdict"] == ["ofo"] and d["mem_class"] == "hard_limit"
    prune = ev.Event.make(ts_ns=1, family=ev.MEM_DROP, method=ev.TP_BTF, verdict=ev.VERDICT_DROP_PRUNE)
    assert as_json(prune, Clock(0), Sampled())["reason"] == "TCP_OFO_QUEUE_PRUNE"
    both = ev.Event.make(ts_ns=1, family=ev.MEM_DROP, verdict=ev.VERDICT_DROP_RCVQ | ev.VERDICT_DROP_OFO)
    assert as_json(both, Clock(0), Sampled())["verdict"] == ["rcvq_or_ofo"]
