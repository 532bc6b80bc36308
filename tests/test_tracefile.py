"""Trace files: torn, damaged, empty, foreign and newer files each give a named
one-line error and a non-zero exit; a file cut short reads back to its last
complete block; a fuzz test over the reader."""
import os
import random
import struct
import subprocess
import sys
import zlib

import pytest

from conftest import DATA, ROOT
from tracer.model import events as ev
from tracer.model import tracefile as tf
from tracer.capture.recorder import Recorder, RecordingStopped

SAMPLE = os.path.join(DATA, "sample.tcpoom")


def tcpoom(*args):
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def blocks_of(path):
    with tf.TraceReader(path) as r:
        return [(b.type, b.offset) for b in r.blocks()], r.damage


def test_sample_reads_cleanly():
    blocks, damage = blocks_of(SAMPLE)
    assert damage is None
    types = [t for t, _ in blocks]
    assert tf.EVENTS in types and tf.SNAPSHOT in types and types[-1] == tf.TRAILER


@pytest.mark.parametrize("content,error", [
    (b"", "EmptyTraceFile"),
    (b"hello, this is not a trace file at all", "NotATraceFile"),
    (b"TCPOOM\r", "TruncatedTrace"),
    (struct.pack("<8sHHI", tf.MAGIC, 2, 0, 0), "UnsupportedVersion"),
    (struct.pack("<8sHHI", tf.MAGIC, 1, 0, 0), "TruncatedTrace"),
])
@pytest.mark.parametrize("command", ["report", "replay", "export", "parse"])
def test_bad_files_give_a_named_one_line_error(tmp_path, content, error, command):
    p = tmp_path / "bad.tcpoom"
    p.write_bytes(content)
    r = tcpoom(command, str(p))
    assert r.returncode != 0
    assert error in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_file_is_one_line(tmp_path):
    r = tcpoom("report", str(tmp_path / "nope.tcpoom"))
    assert r.returncode != 0 and "No such file" in r.stderr and "Traceback" not in r.stderr


def test_cut_short_reads_back_to_the_last_complete_block(tmp_path):
    data = open(SAMPLE, "rb").read()
    blocks, _ = blocks_of(SAMPLE)
    cut = blocks[len(blocks) // 2][1] + 10          # inside a block
    p = tmp_path / "cut.tcpoom"
    p.write_bytes(data[:cut])
    got, damage = blocks_of(str(p))
    assert got == blocks[:len(blocks) // 2 - 0][:len(got)] and len(got) == len(blocks) // 2
    assert damage.startswith("TruncatedTrace")
    r = tcpoom("report", str(p), "--format", "markdown")
    assert r.returncode == 5                          # reported, from a damaged file
    assert "# tcpoom report" in r.stdout and "Damaged file" in r.stdout
    assert "TruncatedTrace" in r.stderr and "Traceback" not in r.stderr


def test_a_flipped_byte_stops_reading_at_that_block(tmp_path):
    data = bytearray(open(SAMPLE, "rb").read())
    blocks, _ = blocks_of(SAMPLE)
    victim = blocks[3][1] + 20
    data[victim] ^= 0xFF
    p = tmp_path / "flip.tcpoom"
    p.write_bytes(bytes(data))
    got, damage = blocks_of(str(p))
    assert len(got) == 3 and damage.startswith("CorruptBlock")


def test_fuzz_reader_never_raises_anything_else(tmp_path):
    """Cut, flipped, inserted and appended bytes: the reader raises nothing but
    its own errors, and reads every block that lies wholly before the first
    changed byte, as it was written (the file's intact prefix is never lost)."""
    data = open(SAMPLE, "rb").read()
    with tf.TraceReader(SAMPLE) as r:
        first = r.block_offsets()[0][0]
        payloads = {b.offset: b.payload for b in r.blocks()}
    # the blocks as written, walked from their headers here, not by the reader
    original, ends, at = [], [], first
    while at < len(data):
        btype, _, _, length, _, _ = struct.unpack_from("<BBHIII", data, at)
        original.append((btype, at, payloads.get(at)))
        at += struct.calcsize("<BBHIII") + length
        ends.append(at)
    assert at == len(data) and None not in [pl for _, _, pl in original]
    rng = random.Random(1234)
    p = tmp_path / "fuzz.tcpoom"
    checked_blocks = 0
    for i in range(400):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:
            buf = buf[:rng.randrange(len(buf))]
        elif kind == 1:
            for _ in range(rng.randrange(1, 8)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif kind == 2:
            at = rng.randrange(len(buf))
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        else:           # a block with a valid CRC but garbage inside
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
            btype = rng.choice([tf.EVENTS, tf.SNAPSHOT, tf.HOLDERS, tf.COUNTERS, 9])
            buf += struct.pack("<BBHIII", btype, 0, 0, len(junk), zlib.crc32(junk), len(junk)) + junk
        p.write_bytes(bytes(buf))
        first_diff = next((j for j, (a, b) in enumerate(zip(buf, data)) if a != b),
                          min(len(buf), len(data)))
        intact = [blk for blk, end in zip(original, ends) if end <= first_diff]
        try:
            with tf.TraceReader(str(p)) as r:
                from tracer.model.aggregate import Aggregate
                from tracer.analysis.report import build
                agg = Aggregate(r.header)
                read = []
                for b in r.blocks():
                    read.append((b.type, b.offset, b.payload))
                    try:
                        agg.add_block(b)
                    except (ValueError, KeyError, TypeError, AttributeError, struct.error) as e:
                        pytest.fail(f"iteration {i}: aggregate raised {e!r} on a checked block")
                build(agg, [str(p)])
        except tf.TraceFileError:
            # only a damaged header block may refuse the whole file
            assert first_diff < first, \
                f"iteration {i}: refused a file whose header is intact"
            continue
        assert read[:len(intact)] == intact, \
            f"iteration {i}: lost or changed blocks before the first changed byte ({first_diff})"
        if kind == 3:                  # appended: every block of the original is read
            assert len(read) >= len(original), f"iteration {i}"
        checked_blocks += len(intact)
    assert checked_blocks > 400        # the prefixes were not all empty


def test_recorder_writes_0600_and_rotates(tmp_path):
    rec = Recorder(str(tmp_path / "ring"), {"hostname": "h"}, ev.EVENT_SIZE, rotate=4096, keep=3)
    one = ev.frame(ev.Event.make(ts_ns=1, family=ev.TW_OVERFLOW).pack())
    for i in range(200):
        rec.add_events(one * 10, 10)
        rec.flush()
    rec.close({"stop_reason": "test"})
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 3 and files[-1].endswith(f".{rec._seq:06d}")
    for f in files:
        assert os.stat(tmp_path / f).st_mode & 0o777 == 0o600
        with tf.TraceReader(str(tmp_path / f)) as r:
            assert list(r.blocks()) and r.damage is None


@pytest.mark.kernel
def test_full_disk_keeps_what_was_recorded(tmp_path):
    """A filesystem that fills up: the recording stops with a clear error and
    the file reads back to its last complete block. (Root: a tiny tmpfs.)"""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        rec = Recorder(str(mnt / "full.tcpoom"), {"hostname": "h"}, ev.EVENT_SIZE)
        one = ev.frame(ev.Event.make(ts_ns=1, family=ev.OOM_CHECK).pack())
        with pytest.raises(RecordingStopped, match="disk full"):
            for _ in range(1000):
                rec.add_events(one * 20, 20)
                rec.flush()
        with pytest.raises(RecordingStopped):
            rec.close({"stop_reason": "error"})       # no room for a trailer; the file is closed
        assert rec._fd == -1
        with tf.TraceReader(str(mnt / "full.tcpoom")) as r:
            n = sum(b.events()[1] for b in r.blocks() if b.type == tf.EVENTS)
            assert r.damage is None and n > 0
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode:
            subprocess.run(["umount", "-l", str(mnt)])


def test_records_of_the_1_0_layout_read_as_today_with_no_owner():
    """sample.tcpoom was written with 176-byte records: they widen to today's
    layout, the fields added since read zero (owner unknown)."""
    from tracer.model import events as ev
    with tf.TraceReader(os.path.join(os.path.dirname(__file__), "data", "sample.tcpoom")) as r:
        blocks = [b for b in r.blocks() if b.type == tf.EVENTS]
        size, count, records, stride, skip = blocks[0].events()
    assert (size, stride, skip) == (ev.EVENT_SIZE, ev.STRIDE, ev.FRAME) and count
    e = ev.Event.decode(records, skip)
    assert e.owner_pid == 0 and e.owner_fidelity == ev.OWNER_NONE and e.who_pid == e.pid
