"""Reports from the committed sample trace (a real recording): golden text for
the terminal and Markdown reports, the JSON keys, several hosts side by side."""
import copy
import json
import os

import pytest

from conftest import DATA, ROOT
from tracer.cli.commands.report import read_recordings
from tracer.render.reporters import render

SAMPLE = "tests/data/sample.tcpoom"       # relative: the path appears in the reports


@pytest.fixture(scope="module")
def models():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        m, damage = read_recordings([SAMPLE])
    finally:
        os.chdir(cwd)
    assert damage == []
    return m


@pytest.mark.parametrize("fmt,golden", [("terminal", "sample-report.txt"), ("markdown", "sample-report.md"),
                                        ("json", "sample-report.json"), ("html", "sample-report.html")])
def test_golden(models, fmt, golden, request):
    text = render(fmt, models, width=100)
    path = os.path.join(DATA, golden)
    if request.config.getoption("--regen-golden"):
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read()


def test_report_names_each_limit_and_the_counts_match(models):
    m = models[0]
    ids = [f["id"] for f in m["diagnosis"]]
    assert {"tw_overflow", "orphans", "tcp_mem"} <= set(ids)
    for fam, row in m["kernel_counters"]["comparison"].items():
        assert row["events"] == row["kernel_delta"], fam
    # the lab namespace's tcp_max_tw_buckets was 5, the value at the start 131072:
    # the snippet must not cut it to 1024 (issue 12)
    assert "net.ipv4.tcp_max_tw_buckets" not in m["sysctl_snippet"]
    assert m["limits_during_events"]["tcp_max_tw_buckets"] == 5
    assert m["limits_during_events"]["tcp_max_orphans"] == 0


def test_every_peak_is_against_the_limit_in_force_in_every_format(models):
    # in the sample tcp_max_orphans was 0 and tcp_mem[2] 40 pages at the
    # moments of the peaks, 131072 and 575796 at the start (issue 12)
    peaks = models[0]["peaks"]
    assert peaks["orphans"]["limit"] == 0 and peaks["memory_pages"]["tcp_mem2"] == 40
    for fmt in ("terminal", "markdown"):
        text = " ".join(render(fmt, models, width=400).split())
        assert "vs tcp_max_orphans 0 in force then (131072 at the start)" in text
        assert "6480.0% of tcp_mem[2] 40 in force then (575796 at the start)" in text
        assert "vs tcp_max_orphans 131072 at" not in text and "of tcp_mem[2] 575796 at" not in text
    html = render("html", models)
    assert "limit 0" in html and "tcp_mem2 40" in html


def test_json_is_stable_and_complete(models):
    doc = json.loads(render("json", models))
    assert doc["schema"] == "tcpoom-report/1"
    keys = set(doc["hosts"][0])
    assert {"source", "span", "plan", "limits", "events", "kernel_counters", "loss", "crossed",
            "peaks", "series", "distributions", "top", "holders", "diagnosis", "sysctl_snippet"} <= keys


def test_hosts_side_by_side(models):
    other = copy.deepcopy(models[0])
    other["source"]["hostname"] = "db-2"
    text = render("terminal", [models[0], other], width=120)
    assert "hosts side by side" in text and "db-2" in text
    md = render("markdown", [models[0], other])
    assert "| | vm | db-2 |" in md


def test_the_same_recording_given_twice_is_counted_once(tmp_path):
    # the same path, a copy and a copy cut short: one recording (issue 12)
    import shutil
    copy = tmp_path / "copy.tcpoom"
    shutil.copy(os.path.join(ROOT, SAMPLE), copy)
    cut = tmp_path / "cut.tcpoom"
    cut.write_bytes(copy.read_bytes()[:9000])
    sample = os.path.join(ROOT, SAMPLE)
    once, _ = read_recordings([sample])
    warnings = []
    models, damage = read_recordings([sample, sample, str(copy), str(cut)], warnings=warnings)
    assert len(models) == 1 and damage == []           # the longest copy was kept
    assert models[0]["events"]["total"] == once[0]["events"]["total"] == 137
    assert len(warnings) == 3 and "given twice" in warnings[0] and all("counted once" in w for w in warnings)


def test_files_of_one_rotate_ring_are_not_duplicates(tmp_path):
    from tracer.model import events as ev
    from tracer.capture.recorder import Recorder
    rec = Recorder(str(tmp_path / "ring"), {"hostname": "h"}, ev.EVENT_SIZE, rotate=40)
    rec.on_rotate = lambda: []
    for i in range(3):
        rec.add_json(3, {"ts_ns": i, "limits": {}})
    rec.close({"stop_reason": "test"})
    warnings = []
    read_recordings(rec.files, warnings=warnings)
    assert len(rec.files) > 1 and warnings == []
