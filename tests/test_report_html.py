"""The HTML report: content, bounded size, escaping of everything the kernel or host
wrote, and (as root, with Debian's chromium) the page as a real browser renders it."""
import copy
import html
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import tempfile

import pytest

from conftest import DATA
from tracer.cli.commands.report import read_recordings
from tracer.render.reporters import render as render_format
from tracer.render.reporters.html import MAX_POINTS, MAX_ROWS, downsample, render

SAMPLE = os.path.join(DATA, "sample.tcpoom")
HOSTILE_COMM = "<script>alert(1)</script>"
HOSTILE_HOST = "<img src=x onerror=alert(2)>"
SIZE_BOUND = 400_000       # bytes: the sample page is ~50 KB, a 100,000-second one must stay near it


@pytest.fixture(scope="module")
def models():
    models, damage = read_recordings([SAMPLE])
    assert not damage
    return models


def fresh(models):
    return copy.deepcopy(models[0])


def data_block(page: str) -> dict:
    m = re.search(r'<script id="tcpoom-data" type="application/json">(.*?)</script>', page, re.S)
    assert m, "no chart data block"
    return json.loads(m.group(1))


def hostile(models) -> dict:
    m = fresh(models)
    m["source"]["hostname"] = HOSTILE_HOST
    m["top"]["processes"][0]["comm"] = HOSTILE_COMM
    m["holders"]["processes"][0]["comm"] = HOSTILE_COMM
    m["holders"]["latest"][0]["comm"] = HOSTILE_COMM
    return m


# ---------------------------------------------------------------------------- content

def test_findings_snippet_and_tables(models):
    page = render(models)
    m = models[0]
    assert page.startswith("<!DOCTYPE html>")
    for f in m["diagnosis"]:
        assert html.escape(f["title"]) in page
        for line in f["evidence"] + f["advice"]:
            assert html.escape(line) in page
        if f["why"]:
            assert html.escape(f["why"]) in page
    for line in m["sysctl_snippet"].strip().splitlines():
        assert html.escape(line) in page
    for c in m["crossed"]:
        assert html.escape(c["limit"]) in page
    assert "TCPAbortOnMemory" in page and "agrees" in page        # events against the counters
    assert "No event lost" in page
    top = m["top"]
    assert html.escape(top["processes"][0]["comm"]) in page        # top processes, ports, holders
    assert str(top["local_ports"][0]["port"]) in page
    for h in m["holders"]["latest"][:3]:
        assert html.escape(h["local"]) in page
    # the same page through the reporters' dispatch (`tcpoom report --format html`)
    assert render_format("html", models) == page


def test_a_chart_per_family_and_per_proc_series(models):
    page = render(models)
    m = models[0]
    charts = re.findall(r'<svg class="chart" data-chart="(\d+)" data-series="([^"]*)"', page)
    series = [s for _, s in charts]
    for fam in m["events"]["by_family"]:
        assert series.count(fam) == 1, fam
    for key in ("mem", "orphan", "tw"):
        assert f"proc.{key}" in series
    # one data entry per chart, in order, for the hover read-out
    data = data_block(page)
    assert [int(i) for i, _ in charts] == list(range(len(data["charts"])))
    oom = data["charts"][series.index("oom_check")]
    assert oom["series"][0]["v"] == m["series"]["events"]["oom_check"]
    # three gauges: memory, orphans, TIME_WAIT; the sample crossed all three limits
    assert page.count('<svg class="gauge"') == 3
    assert page.count("AT / OVER LIMIT") == 3
    # axes with labels: wall-clock ticks and units
    assert "time (UTC, from 2026-11-21)" in page and "events/s" in page and ">pages<" in page


def test_self_contained(models):
    page = render(models)
    for ref in re.findall(r'\b(?:src|href|xlink:href|action)\s*=\s*"([^"]*)"', page):
        assert ref.startswith("#"), ref
    assert "http://" not in page and "https://" not in page and "//" not in re.sub(r"<script>.*?</script>", "",
                                                                                 page, flags=re.S)
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page           # nothing may load, whatever slipped in


def test_several_hosts_side_by_side(models):
    a, b = fresh(models), fresh(models)
    b["source"]["hostname"] = "db-2"
    b["events"]["by_family"]["tw_overflow"] = 7
    page = render([a, b])
    table = page[page.index('<table class="summary">'):]
    table = table[:table.index("</table>")]
    assert '<a href="#host-0">vm</a>' in table and '<a href="#host-1">db-2</a>' in table
    assert "tw_overflow events</th><td>55</td><td>7</td>" in table
    assert 'id="host-0"' in page and 'id="host-1"' in page


# ---------------------------------------------------------------------------- size

def test_downsample_keeps_each_bucket_max():
    vals = [0] * 100_000
    vals[77_777] = 9_999
    step, pts = downsample(vals)
    assert len(pts) <= MAX_POINTS and step == 167
    assert max(pts) == 9_999 and pts[77_777 // step] == 9_999
    assert downsample([1, None, 3]) == (1, [1, None, 3])
    step, pts = downsample([None] * 1000 + [5] * 1000)
    assert pts[0] is None and pts[-1] == 5                # no snapshot stays a gap, not a zero


def test_size_bounded_with_100000_points(models):
    m = fresh(models)
    n = 100_000
    for i, fam in enumerate(m["series"]["events"]):
        vals = [(j * 7 + i) % 5 for j in range(n)]
        vals[12_345 + i] = 50_000                      # a one-second spike in each family
        m["series"]["events"][fam] = vals
    for k in m["series"]["proc"]:
        m["series"]["proc"][k] = [None if j % 97 == 0 else j % 3000 for j in range(n)]
    m["span"]["seconds"] = n
    # and tables longer than any report should show
    m["top"]["processes"] = [{"pid": p, "comm": f"worker-{p}", "events": 10_000 - p} for p in range(5_000)]
    m["holders"]["latest"] = m["holders"]["latest"] * 500
    page = render([m])
    sample = render(models)
    assert len(page) < SIZE_BOUND, len(page)
    assert len(page) < len(sample) + 250_000
    data = data_block(page)
    for chart in data["charts"]:
        assert chart["n"] <= MAX_POINTS and chart["span"] == n
        for s in chart["series"]:
            assert len(s["v"]) <= MAX_POINTS
    fams = [c for c in data["charts"] if c["unit"] == "events/s"]
    assert len(fams) == len(m["series"]["events"])
    assert all(max(c["series"][0]["v"]) == 50_000 for c in fams)     # every spike survived
    assert "each point the max of 167 s" in page
    assert "worker-0" in page and f"worker-{MAX_ROWS}" not in page
    assert "more rows not shown" in page


# ---------------------------------------------------------------------------- escaping

def test_hostile_comm_and_hostname_are_escaped(models):
    page = render([hostile(models), fresh(models)])
    for raw in (HOSTILE_COMM, HOSTILE_HOST):
        assert raw not in page
        assert html.escape(raw) in page
    assert page.count("<script") == 2           # the data block and ours, nothing else
    assert "<img" not in page
    assert "alert(" not in re.sub(r"&lt;.*?&gt;", "", page.replace(html.escape(HOSTILE_COMM), ""))


def _poison(obj, counter, keys=False):
    """Every string (and, where asked, every key) replaced by a unique piece of markup."""
    def bad():
        counter[0] += 1
        return f"<i data-p=\"{counter[0]}\">'&</script><script>alert({counter[0]})</script>"
    if isinstance(obj, dict):
        return {(bad() if keys and isinstance(k, str) else k): _poison(v, counter, keys) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_poison(v, counter, keys) for v in obj]
    if isinstance(obj, str):
        return bad()
    return obj


def test_no_model_string_reaches_the_page_unescaped(models):
    m = fresh(models)
    counter = [0]
    m = _poison(m, counter)
    # the keys that name things are data too: families, verdicts, counters, plan fields
    for path in (("events", "by_family"), ("events", "by_verdict"), ("series", "events"),
                 ("kernel_counters", "comparison"), ("kernel_counters", "tcpext_delta"), ("plan",),
                 ("distributions", "shift"), ("distributions", "orphans_at_decision"), ("loss",),
                 ("events", "oom_callers")):
        d = m
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = _poison(d[path[-1]], counter, keys=True)
    m["loss"] = {"<b>lost</b>": 3}
    page = render([m, m])
    assert counter[0] > 100
    assert "<i data-p" not in page and "<b>lost" not in page
    assert page.count("<script") == 2
    assert "</script><script>alert" not in page
    assert "&lt;i data-p=&quot;" in page
    data = data_block(page)                    # still valid JSON, names intact inside it
    assert any("<i data-p=" in s["name"] for c in data["charts"] for s in c["series"])


def test_script_data_cannot_close_its_element(models):
    m = fresh(models)
    m["series"]["events"] = {"</script><script>alert(3)</script>": [1, 2, 3]}
    page = render([m])
    block = re.search(r'<script id="tcpoom-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    assert "<" not in block and ">" not in block and "&" not in block
    assert data_block(page)["charts"][0]["series"][0]["name"] == "</script><script>alert(3)</script>"


def test_models_with_parts_missing_or_odd_still_render(models):
    """A model from an older or newer tcpoom, or a hand-edited one, renders what it can."""
    assert "<p>No recordings.</p>" in render([])
    assert "No per-second figures" in render([{}])
    rng = random.Random(7)

    def mutate(o):
        if isinstance(o, dict):
            return {k: mutate(v) for k, v in o.items()}
        if isinstance(o, list):
            return [mutate(v) for v in o]
        return rng.choice([None, "x", float("nan"), [1, "a"], {"a": 1}, True] + [o] * 14)

    for _ in range(60):
        page = render([mutate(fresh(models))])
        assert page.endswith("</html>\n")


# ---------------------------------------------------------------------------- a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def _chromium(url: str, *args: str, timeout: float = 25):
    """Run headless chromium on url; (stdout, stderr). A page that opens a dialog
    (alert) never finishes loading in headless mode, so a timeout means one fired."""
    exe = shutil.which("chromium")
    assert exe, "the browser test needs Debian's chromium: apt-get install -y chromium"
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)         # the browser and its helpers, only ours
            p.communicate()
            pytest.fail(f"chromium did not finish in {timeout} s: the page is blocked (an alert dialog?)")
    return out, err


def _page_errors(stderr: str):
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line or "Uncaught" in line or "Content Security Policy" in line]


@pytest.mark.browser
def test_page_in_headless_chromium(models, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render([fresh(models), hostile(models)]))
    url = f"file://{page}"

    dom, err = _chromium(url, "--dump-dom")
    assert not _page_errors(err), _page_errors(err)
    n_charts = len(re.findall(r'<svg class="chart"', dom))
    assert n_charts >= 2 * (4 + 3)                      # per host: 4 families, mem/orphan/tw
    assert f'data-charts-hooked="{n_charts}"' in dom     # our script ran, on every chart
    assert dom.count('<svg class="gauge"') == 6
    assert "<path" in dom and "<text" in dom
    # the hostile strings stayed text: no element came out of them
    assert "<img" not in dom and dom.count("<script") == 2
    assert html.escape(HOSTILE_COMM, quote=False) in dom

    shot = tmp_path / "report.png"
    _, err = _chromium(url, f"--screenshot={shot}", "--window-size=1280,2400")
    assert not _page_errors(err), _page_errors(err)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1280, 2400)
    assert len(png) > 100_000, "a near-blank screenshot"
    print(f"screenshot: {shot}")
