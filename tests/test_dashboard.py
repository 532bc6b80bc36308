"""The live dashboard rendered from fixed states (the committed sample trace fed
through the same state a live session uses), at 80 and 120 columns, against
golden text; and, as a kernel test, a real terminal under tmux during a lab
scenario, whose numbers on screen must equal the kernel's counters."""
import io
import os
import re
import subprocess
import sys
import time

import pytest
from rich.console import Console

from conftest import DATA, ROOT
from tracer.model import tracefile as tf
from tracer.render.dashboard import DashboardState, render, summary_text
from tracer.model.playback import clock_of

SAMPLE = os.path.join(DATA, "sample.tcpoom")


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def state_from_sample():
    with tf.TraceReader(SAMPLE) as r:
        h = r.header
        st = DashboardState(h, h["plan"]["families"], h["families"], clock_of(h))
        for b in r.blocks():
            if b.type == tf.EVENTS:
                size, count, recs, stride, skip = b.events()
                st.add_events(bytes(recs), count, stride, skip)
            elif b.type == tf.SNAPSHOT:
                st.add_snapshot(b.json())
            elif b.type == tf.COUNTERS:
                st.counters = b.json()["counters"]
    st.add_kmsg({"TCP: too many orphaned sockets": 10}, 30)
    return st


def draw(st, width, height):
    buf = io.StringIO()
    Console(file=buf, width=width, height=height, color_system=None, force_terminal=False,
            highlight=False, emoji=False).print(render(st, width, height))
    return buf.getvalue()


@pytest.mark.parametrize("width,height", [(80, 24), (120, 30)])
def test_golden(utc, request, width, height):
    text = draw(state_from_sample(), width, height)
    path = os.path.join(DATA, f"dashboard-{width}.txt")
    if request.config.getoption("--regen-golden"):
        with open(path, "w") as f:
            f.write(text)
    assert all(len(line) <= width for line in text.splitlines())
    with open(path) as f:
        assert text == f.read()


def test_fits_80x24_and_degrades_when_narrower(utc):
    st = state_from_sample()
    assert len(draw(st, 80, 24).splitlines()) <= 24
    narrow = draw(st, 60, 20)
    assert all(len(line) <= 60 for line in narrow.splitlines())
    assert "oom_check" in narrow


def test_counts_on_screen_are_the_kernel_side_counts(utc):
    st = state_from_sample()
    text = draw(st, 80, 24)
    row = re.search(r"oom_check\s+(\d+)\s+(\d+)\s+(\d+)", text)
    assert row and row.group(1) == row.group(2) == "40" and row.group(3) == "10"
    assert "tw_overflow" in summary_text(st)


def test_state_stays_bounded():
    st = state_from_sample()
    from tracer.model import events as ev
    one = ev.Event.make(ts_ns=0, family=ev.OOM_CHECK, method=3, af=2, pid=1, comm=b"x").pack()
    for k in range(200):            # 200 "seconds" of events with fresh ports and pids
        recs = ev.frame_all([ev.Event.make(ts_ns=(k * 10 + 1) * 10 ** 9 + i, family=ev.OOM_CHECK, method=3,
                                           af=2, sport=i + k * 50, pid=i + k * 50, comm=b"p").pack()
                             for i in range(50)])
        st.add_events(recs, 50)
        st.add_snapshot({"ts_ns": (k * 10 + 1) * 10 ** 9, "sockstat": {"TCP": {"mem": k}}, "limits": {}})
    assert len(st.latest) <= 50
    assert len({s for (_, s) in st.agg.per_second}) <= 601
    assert len(st.agg.snapshot_series) <= 601
    assert one


def _pane(session):
    return subprocess.run(["tmux", "capture-pane", "-pt", session], capture_output=True, text=True).stdout


@pytest.mark.kernel
def test_real_terminal_during_a_lab_scenario():
    from scripts.lab import Lab
    session = f"tcpoom-test-{os.getpid()}"
    with Lab(allow_global_sysctls=True) as lab:
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                        f"cd {ROOT} && {sys.executable} -m tracer live --netns {lab.netns_name}; sleep 30"],
                       check=True)
        try:
            deadline = time.monotonic() + 20
            while "kernel counter" not in _pane(session) and time.monotonic() < deadline:
                time.sleep(0.2)
            tw = lab.run("tw_overflow").deltas["TCPTimeWaitOverflow"]
            oom = lab.run("orphans_close").deltas["TCPAbortOnMemory"]
            time.sleep(2.5)             # a snapshot and a few redraws
            screen = _pane(session)
            m_tw = re.search(r"tw_overflow\s+([\d,]+)\s+([\d,]+)", screen)
            m_oom = re.search(r"oom_check\s+([\d,]+)\s+([\d,]+)\s+(\d+)", screen)
            assert m_tw and m_oom, screen
            assert int(m_tw.group(1).replace(",", "")) == int(m_tw.group(2).replace(",", "")) == tw
            assert int(m_oom.group(1).replace(",", "")) == int(m_oom.group(2).replace(",", "")) == oom
            assert int(m_oom.group(3)) < oom            # the kernel log printed fewer lines
            subprocess.run(["tmux", "send-keys", "-t", session, "q"])
            deadline = time.monotonic() + 10
            while "stopped (q)" not in _pane(session) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "stopped (q)" in _pane(session)
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session])


def test_top_tables_show_owners_and_their_containers(utc):
    """A refusal in softirq names its socket's owner and container, not swapper."""
    from tracer.model import events as ev
    st = state_from_sample()
    cid = "4f5c1a2b" * 8
    st.agg.names.learn({"ids": {"v2": {"77": {"path": f"/system.slice/docker-{cid}.scope",
                                              "label": "docker:" + cid[:12]}}}})
    recs = [ev.Event.make(ts_ns=st.now_ns + i, family=ev.MEM_EXCEED, method=ev.TP_BTF, pid=0,
                          comm=b"swapper/0", owner_pid=4242, owner_comm=b"reader",
                          owner_fidelity=ev.OWNER_LAST_KNOWN, owner_cgroup=77, af=2,
                          verdict=ev.VERDICT_RECV, memory_allocated=50, tcp_mem=(1, 2, 40))
            for i in range(5000)]
    st.add_events(ev.frame_all([e.pack() for e in recs]), len(recs))
    text = draw(st, 120, 40)
    assert "reader[4242]" in text and "docker:" + cid[:12] in text
    assert "cgroup / container" in text
