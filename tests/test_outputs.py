"""No command destroys evidence: outputs never go over an input (same inode,
through links too), an existing recording is replaced only with --force, a
failed write leaves nothing behind; bad paths and inputs are one line with the
documented exit code (README "Exit codes")."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import DATA, ROOT
from tracer.cli import app as cli
from tracer.model import events as ev
from tracer import outfile
from tracer.capture.recorder import Recorder, RecordingStopped

SAMPLE = os.path.join(DATA, "sample.tcpoom")


@pytest.fixture
def rec(tmp_path):
    p = tmp_path / "x.tcpoom"
    shutil.copy(SAMPLE, p)
    return p


def run(*args):
    return subprocess.run([sys.executable, "-m", "tracer", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def same_bytes(p):
    with open(p, "rb") as a, open(SAMPLE, "rb") as b:
        return a.read() == b.read()


@pytest.mark.parametrize("cmd", [["export"], ["export", "--format", "csv"], ["report"],
                                 ["report", "--format", "html"]])
@pytest.mark.parametrize("how", ["same", "hardlink", "symlink"])
def test_output_over_an_input_is_refused_and_the_input_kept(rec, tmp_path, cmd, how):
    out = rec
    if how == "hardlink":
        out = tmp_path / "link.tcpoom"
        os.link(rec, out)
    elif how == "symlink":
        out = tmp_path / "sym.txt"
        os.symlink(rec, out)
    r = run(*cmd, rec, "-o", out)
    assert r.returncode == 1 and "refusing to write over it" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert same_bytes(rec)
    # even with --force: an input is never an output
    assert run(*cmd, rec, "-o", out, "--force").returncode == 1 and same_bytes(rec)


def test_an_existing_recording_is_replaced_only_with_force(rec, tmp_path):
    other = tmp_path / "other.tcpoom"
    shutil.copy(SAMPLE, other)
    r = run("export", rec, "-o", other)
    assert r.returncode == 1 and "--force" in r.stderr and same_bytes(other)
    assert run("export", rec, "-o", other, "--force").returncode == 0
    assert not outfile.is_recording(str(other))
    # a plain text file is replaced without asking, and in one piece
    text = tmp_path / "r.txt"
    text.write_text("old\n")
    assert run("report", rec, "-o", text).returncode == 0
    assert "tcpoom report" in text.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "r.txt"
    out.write_text("old\n")
    with pytest.raises(RuntimeError):
        with outfile.atomic_text(str(out)) as f:
            f.write("half")
            raise RuntimeError("disk on fire")
    assert out.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["r.txt"]


def test_recorder_never_truncates_an_existing_recording(tmp_path):
    p = tmp_path / "r.tcpoom"
    shutil.copy(SAMPLE, p)
    with pytest.raises(RecordingStopped, match="--force"):
        Recorder(str(p), {"hostname": "h"}, ev.EVENT_SIZE)
    assert same_bytes(p)
    r = Recorder(str(p), {"hostname": "h"}, ev.EVENT_SIZE, force=True)
    # the name holds a readable recording from the start (header renamed into place)
    from tracer.model import tracefile as tf
    assert tf.TraceReader(str(p)).header == {"hostname": "h"}
    r.close({"stop_reason": "test"})
    assert sorted(os.listdir(tmp_path)) == ["r.tcpoom"] and os.stat(p).st_mode & 0o777 == 0o600


def test_rotation_refuses_an_old_ring_without_force(tmp_path):
    from tracer.cli.commands.record import _check_output
    base = str(tmp_path / "ring")
    open(base + ".000001", "wb").write(open(SAMPLE, "rb").read())
    with pytest.raises(outfile.OutputError, match="--force"):
        _check_output(base, 4096, False)
    _check_output(base, 4096, True)
    _check_output(str(tmp_path / "new"), None, False)


@pytest.mark.parametrize("args", [
    ["report", "{rec}", "-o", "/nonexistent/x.html", "--format", "html"],
    ["export", "{rec}", "-o", "/nonexistent/dir/x.jsonl"],
    ["report", "{rec}", "-o", "{tmp}"],            # a directory
])
def test_bad_output_paths_are_one_line_exit_1(rec, tmp_path, args):
    r = run(*[a.format(rec=rec, tmp=tmp_path) for a in args])
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("tcpoom: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr and same_bytes(rec)


def test_unprivileged_output_into_root_is_one_line(rec, monkeypatch, capsys):
    # as a user who may not write into /root (root itself may: simulated)
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert cli.main(["report", str(rec), "-o", "/root/x.html", "--format", "html"]) == 1
    err = capsys.readouterr().err
    assert "Permission denied" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", ["report", "export", "replay", "parse"])
def test_a_directory_or_unreadable_input_is_one_line(tmp_path, cmd):
    r = run(cmd, tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Is a directory" in r.stderr and "Usage" not in r.stderr


def test_messages_name_the_kind_of_damage_once(tmp_path):
    p = tmp_path / "short.tcpoom"
    p.write_bytes(open(SAMPLE, "rb").read()[:100])
    r = run("report", p)
    assert r.returncode == 1 and r.stderr.count("TruncatedTrace") == 1, r.stderr


def test_a_partial_read_is_a_warning_with_exit_5(tmp_path):
    p = tmp_path / "cut.tcpoom"
    p.write_bytes(open(SAMPLE, "rb").read()[:9000])
    r = run("report", p)
    assert r.returncode == 5 and r.stderr.startswith("tcpoom: warning: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_usage_errors_are_one_line_exit_2(capsys):
    assert cli.main(["report"]) == 2
    assert cli.main(["export", "x", "--format", "xml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("usage" in line and "--help" in line for line in err)


def test_live_record_refuses_an_existing_recording_before_attaching(rec, capsys):
    assert cli.main(["live", "--record", str(rec), "--no-screen", "--duration", "1"]) == 1
    assert "--force" in capsys.readouterr().err and same_bytes(rec)


def test_record_refuses_before_attaching(rec, capsys):
    assert cli.main(["record", "-o", str(rec), "--duration", "1"]) == 1
    assert "--force" in capsys.readouterr().err and same_bytes(rec)


def test_special_files_are_written_in_place_never_replaced(rec, tmp_path):
    # `record -o /dev/null` (the bcc VM test) and `-o /dev/stdout` must not
    # rename a regular file over a device
    assert run("export", rec, "-o", "/dev/null").returncode == 0
    assert run("report", rec, "-o", "/dev/null", "--force").returncode == 0
    r = Recorder("/dev/null", {"hostname": "h"}, ev.EVENT_SIZE)
    r.close({"stop_reason": "test"})
    import stat
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert not outfile.is_recording(str(fifo)) and outfile.is_special(str(fifo))


def test_force_replaces_an_old_ring_whole(tmp_path):
    base = str(tmp_path / "ring")
    for seq in (7, 8, 9):
        shutil.copy(SAMPLE, f"{base}.{seq:06d}")
    from tracer.cli.commands.record import _check_output
    with pytest.raises(outfile.OutputError):
        _check_output(base, 40, False)
    r = Recorder(base, {"hostname": "h"}, ev.EVENT_SIZE, rotate=40, keep=2, force=True)
    for i in range(4):
        r.add_json(3, {"ts_ns": i})
    r.close({"stop_reason": "test"})
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(p) for p in r.files[-2:]]
