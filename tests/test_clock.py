"""One clock model (tracer/model/clock.py): RFC 3339 with its offset, UTC, in every
output; durations and per-second buckets bounded by the recording; a replay
says how the recording ended."""
import csv
import io
import json
import os
import subprocess
import sys

from conftest import DATA, ROOT
from tracer.model.aggregate import Aggregate
from tracer.model.clock import Clock
from tracer.cli.commands.report import read_recordings
from tracer.model import events as ev
from tracer.analysis.report import build

SAMPLE = os.path.join(DATA, "sample.tcpoom")


def run(*args, tz="Asia/Tokyo"):
    env = dict(os.environ, TZ=tz)       # a local zone far from UTC: nothing may follow it
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def test_iso_is_rfc3339_utc_and_exact_to_the_microsecond():
    c = Clock(1_795_305_108_995_134_841 - 3_797_829_945_419)
    assert c.iso(3_797_829_945_419) == "2026-11-21T23:51:48.995134+00:00"
    assert c.iso(3_797_829_945_419, "milliseconds") == "2026-11-21T23:51:48.995+00:00"
    assert c.hms(3_797_829_945_419) == "23:51:48.995134"


def test_export_jsonl_csv_and_report_agree_on_times_whatever_the_local_zone():
    jl = [json.loads(x) for x in run("export", SAMPLE).stdout.splitlines()]
    rows = list(csv.DictReader(io.StringIO(run("export", SAMPLE, "--format", "csv").stdout)))
    assert [j["time"] for j in jl] == [r["time"] for r in rows]
    assert all(j["time"].endswith("+00:00") for j in jl)
    rep = json.loads(run("report", SAMPLE, "--format", "json").stdout)
    span = rep["hosts"][0]["span"] if "hosts" in rep else rep[0]["span"]
    assert span["start"][:23] <= jl[0]["time"][:23] and jl[-1]["time"][:23] <= span["end"][:23]
    assert span["start"].endswith("+00:00")


def test_the_span_is_the_recordings_length_and_bounds_every_time():
    (m,), _ = read_recordings([SAMPLE])
    # snapshots from 23:51:48.99 to the trailer at 23:51:53.75: 4.8 s (the
    # trailer's own duration_s is 4.759), not a count of whole seconds (6)
    assert m["span"]["seconds"] == 4.8
    start, end = m["span"]["start"], m["span"]["end"]
    assert start <= m["series"]["t0"] <= end
    for c in m["crossed"]:
        assert start <= c["first"] <= c["last"] <= end, c
    for p in m["peaks"].values():
        assert start <= p["at"] <= end


def test_buckets_never_start_before_the_first_record():
    s = 1_000_000_000
    header = {"clock": {"monotonic_ns": 0, "realtime_ns": 1_700_000_000 * s}}
    agg = Aggregate(header)
    recs = [ev.Event.make(ts_ns=t, family=ev.TW_OVERFLOW, verdict=0, tw_count=5, max_tw_buckets=5).pack()
            for t in (10 * s + 900_000_000, 11 * s + 200_000_000)]
    agg.add_events(ev.frame_all(recs), 2)
    m = build(agg, ["x"])
    assert m["span"]["start"] == "2023-11-14T22:13:30.900+00:00"
    assert m["span"]["end"] == "2023-11-14T22:13:31.200+00:00" and m["span"]["seconds"] == 0.3
    assert m["series"]["t0"] == m["span"]["start"]
    (c,) = m["crossed"]
    assert c["first"] == m["span"]["start"] and c["last"] == m["span"]["end"]


def test_replay_says_how_the_recording_ended():
    out = run("replay", "--speed", "0", SAMPLE).stdout
    assert "tcpoom: stopped (SIGINT)" not in out
    assert "end of the recording: the recorder stopped (SIGINT: Ctrl-C) after 4.8 s" in out
    cut = run("replay", "--speed", "0", os.devnull)
    assert cut.returncode == 1


def test_replay_of_a_file_without_trailer_says_so(tmp_path):
    p = tmp_path / "cut.tcpoom"
    p.write_bytes(open(SAMPLE, "rb").read()[:12000])
    r = run("replay", "--speed", "0", str(p))
    assert r.returncode == 5 and "no trailer: the recorder was killed" in r.stdout
