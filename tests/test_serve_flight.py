"""The flight recorder without the kernel: incidents from the ring, retention
by count and bytes, a bounded ring, segments adopted after a restart, and a
state directory held by one serve at a time."""
import os
import time

import pytest

from tracer.model import events as ev
from tracer.model import tracefile as tf
from tracer.errors import UsageError
from tracer.serve.flight import FlightOptions, FlightRecorder

HEADER = {"format": "tcpoom-trace", "hostname": "h", "kernel": "k", "serve": True}


def _events(n):
    return ev.frame_all([ev.Event.make(family=ev.TW_OVERFLOW, netns=1, ts_ns=i).pack() for i in range(n)])


def _snap(i):
    return {"ts_ns": time.monotonic_ns(), "sockstat": {"TCP": {"tw": i}}, "tcpext": {"TCPTimeWaitOverflow": i}}


def _blocks(path):
    with tf.TraceReader(path) as r:
        return [b.type for b in r.blocks()]


def _recorder(tmp_path, **kw):
    opts = FlightOptions(directory=str(tmp_path / "state"), reports=False, **kw)
    return FlightRecorder(opts, HEADER, log=lambda m: None)


def test_an_incident_holds_the_window_before_and_after(tmp_path):
    fr = _recorder(tmp_path, before_s=60, after_s=0.2, segment_s=0.05)
    fr.add_snapshot(_snap(0), [0] * ev.CNT_MAX)
    fr.add_events(_events(3), 3)
    fr.flush()
    time.sleep(0.06)
    fr.tick()                                   # a new segment
    assert len(fr.segments) == 2
    assert fr.trigger("sigusr1")
    assert fr.trigger("http")                   # joins the incident being recorded
    fr.add_events(_events(2), 2)
    fr.add_snapshot(_snap(5), None)
    time.sleep(0.25)
    fr.tick()
    [path] = fr.incident_files()
    assert os.path.basename(path).startswith("incident-")
    assert os.stat(path).st_mode & 0o777 == 0o600
    types = _blocks(path)
    assert types.count(tf.EVENTS) == 2 and types[-1] == tf.TRAILER
    with tf.TraceReader(path) as r:
        assert r.header["incident"]["trigger"] == "sigusr1"
        n = sum(b.events()[1] for b in r.blocks() if b.type == tf.EVENTS)
        trailer = [b.json() for b in r.blocks() if b.type == tf.TRAILER][0]
    assert n == 5
    assert trailer["incident"]["triggers"] == ["sigusr1", "http"]
    assert fr.incidents == {"sigusr1": 1, "http": 1}
    fr.close()


def test_retention_by_count_and_bytes(tmp_path, monkeypatch):
    from tracer.serve import flight
    # four incidents within one second: named -2, -3, -4 after the first, and
    # retention keeps the newest two (by name alone "Z-1" sorted before "Z")
    monkeypatch.setattr(flight, "_stamp", lambda wall: "20261127T030000Z")
    fr = _recorder(tmp_path, after_s=0, keep_incidents=2)
    for i in range(4):
        fr.trigger("sigusr1")
        fr.add_events(_events(100), 100)
        fr.tick()
    kept = [os.path.basename(p) for p in fr.incident_files()]
    assert len(kept) == 2 and kept[0].endswith("Z-3.tcpoom") and kept[1].endswith("Z-4.tcpoom"), kept
    fr.close()
    size = os.path.getsize(fr.incident_files()[-1])
    fr2 = _recorder(tmp_path, after_s=0, keep_incidents=10, incident_bytes=size + 10)
    fr2.trigger("sigusr1")
    fr2.tick()
    assert len(fr2.incident_files()) == 1      # the byte budget holds the newest only
    fr2.close()


def test_the_ring_is_bounded_and_adopted_after_a_restart(tmp_path):
    fr = _recorder(tmp_path, ring_bytes=64 << 10, segment_s=0.01, before_s=3600)
    for i in range(40):
        fr.add_events(_events(50), 50)
        fr.add_snapshot(_snap(i), None)
        time.sleep(0.011)
        fr.tick()
    total = sum(os.path.getsize(s.path) for s in fr.segments)
    assert total <= (64 << 10) + (64 << 10) // 4 + 20000
    names = sorted(os.listdir(fr.ring_dir))
    assert len(names) == len(fr.segments)
    last = fr.segments[-1].seq
    fr.close()
    fr2 = _recorder(tmp_path, ring_bytes=64 << 10, segment_s=0.01, before_s=3600)
    assert fr2.segments[0].seq < last < fr2.segments[-1].seq
    fr2.close()


def test_one_serve_per_state_directory(tmp_path):
    fr = _recorder(tmp_path)
    with pytest.raises(UsageError, match="in use"):
        _recorder(tmp_path)
    fr.close()


@pytest.mark.integration
def test_sigusr1_freezes_an_incident_with_its_reports(tmp_path):
    """The whole path through the command, /proc only (no root needed): a
    SIGUSR1 gives an incident file and its markdown and HTML reports."""
    import signal
    import subprocess
    import sys
    from conftest import ROOT
    from prometheus_server import free_port
    from serve_process import Serve
    state = tmp_path / "state"
    # only SIGUSR1: a lab namespace of another run near its TIME_WAIT limit
    # would otherwise fire the headroom trigger first
    serve = Serve(free_port(), "--no-bpf", "--state-dir", str(state), "--after", "1", "--segment-seconds", "1",
                  "--trigger", "sigusr1")
    try:
        time.sleep(1.5)
        serve.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                l.startswith("tcpoom: incident written") for l in serve.lines):
            if serve.read_line(deadline - time.monotonic()) is None:
                break
    finally:
        code, err = serve.stop()
    assert code == 0, err
    assert "incident (sigusr1)" in err and "incident written" in err, err
    [path] = glob_incidents(state)
    base = path[:-len(".tcpoom")]
    assert os.path.getsize(base + ".md") > 0 and os.path.getsize(base + ".html") > 0
    assert os.stat(base + ".html").st_mode & 0o777 == 0o600
    r = subprocess.run([sys.executable, "-m", "tracer", "report", "--format", "json", path], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def glob_incidents(state):
    return sorted(str(p) for p in (state / "incidents").glob("incident-*.tcpoom"))
