"""Reading a recording on several cores gives the report reading it on one
does, damaged files included."""
from __future__ import annotations

import random

import pytest

from tracer.model import events as ev
from tracer.model import fold as fold_mod
from tracer.model import tracefile as tf
from tracer.model.aggregate import Aggregate
from tracer.analysis.report import build

from test_aggregate import make_records


def write_trace(path, blocks: int = 24, per_block: int = 300) -> None:
    rng = random.Random(3)
    out = [tf.magic_bytes(), tf.encode_json(tf.HEADER, {"hostname": "h", "format": "1.0"})]
    for i in range(blocks):
        recs = make_records(rng, per_block, {"sport", "orphans", "shift", "pid"},
                            (ev.OOM_CHECK, ev.TW_OVERFLOW), t0=(10 + i) * 1_000_000_000)
        out.append(tf.encode_events(ev.frame_all([e.pack() for e in recs]), ev.EVENT_SIZE, per_block,
                                    compress=i % 2 == 0, stride=ev.STRIDE, skip=ev.FRAME))
        out.append(tf.encode_json(tf.SNAPSHOT, {"ts_ns": (10 + i) * 1_000_000_000,
                                                "sockstat": {"TCP": {"orphan": i, "mem": 10 * i}}}))
    out.append(tf.encode_json(tf.TRAILER, {"events": blocks * per_block}))
    with open(path, "wb") as f:
        f.write(b"".join(out))


def report_of(path, workers: int, monkeypatch):
    monkeypatch.setenv("TCPOOM_REPORT_WORKERS", str(workers))
    monkeypatch.setattr(fold_mod, "PARALLEL_MIN_BYTES", 0)
    reader = tf.TraceReader(path)
    agg = Aggregate(reader.header)
    fold_mod.fold(agg, reader)
    reader.close()
    return build(agg, [path]), reader.damage


def damage_at(path, which: str) -> None:
    data = bytearray(open(path, "rb").read())
    reader = tf.TraceReader(path)
    offsets = reader.block_offsets()
    reader.close()
    off = offsets[len(offsets) // 2][0]
    if which == "checksum":
        data[off + 40] ^= 0xFF
    elif which == "header":
        data[off + 4:off + 8] = (1 << 31).to_bytes(4, "little")
    elif which == "cut":
        del data[off + 100:]
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("damage", [None, "checksum", "header", "cut"])
def test_parallel_read_reports_what_one_core_reports(tmp_path, monkeypatch, damage):
    path = str(tmp_path / "t.tcpoom")
    write_trace(path)
    if damage:
        damage_at(path, damage)
    one, damage_one = report_of(path, 1, monkeypatch)
    two, damage_two = report_of(path, 2, monkeypatch)
    assert one == two
    assert damage_one == damage_two
    assert (damage_one is None) == (damage is None)
    if damage:
        assert 0 < one["events"]["total"] < 24 * 300
