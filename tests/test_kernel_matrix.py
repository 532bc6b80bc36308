"""scripts/kernel_matrix.py on a small synthetic results file: the table says
which claims a test verified and which it did not exercise, leaves the run's
figures out, and does not depend on the order the tests ran in."""
import random

import pytest

import matrix_results
from scripts import kernel_matrix


def plan(kernel, engine="co-re"):
    return {"kernel": kernel, "engine": engine, "families": {
        "oom_check": {"method": "fentry", "target": "tcp_check_oom",
                      "fields": {"orphans": {"fidelity": "exact", "how": "x"},
                                 "shift": {"fidelity": "exact", "how": "y"},
                                 "verdict": {"fidelity": "derived", "how": "z"}},
                      "rejected": []},
        "pressure": {"method": "sampled", "target": "/proc/net/protocols",
                     "fields": {"verdict": {"fidelity": "sampled", "how": "w"}},
                     "rejected": [{"method": "fentry tcp_enter_memory_pressure", "reason": "EPERM"}]},
    }}


def write_results(path):
    p = plan("6.1.0-1-amd64")
    rec = matrix_results.Recorder("tests/test_x.py::test_counts[6.1]", str(path))
    rec.claims(p, where="a guest")
    rec.check(p, "oom_check", "count = TcpExt TCPAbortOnMemory", fields=["verdict"],
              used="fentry tcp_check_oom", figures="300/300", where="a guest")
    matrix_results.Recorder("tests/test_x.py::test_timer[6.1]", str(path)).check(
        p, "oom_check", "shift 1..2 on the timer path", fields=["shift"], used="fentry", where="a guest")
    bcc = plan("4.19.0-1-amd64", engine="bcc")
    matrix_results.Recorder("tests/test_vm_bcc.py::test_y", str(path)).check(
        bcc, "pressure", "entries = TcpExt TCPMemoryPressures", fields=["verdict"], figures="2/2")


def test_table_marks_verified_and_unexercised_claims(tmp_path):
    path = tmp_path / "results.jsonl"
    write_results(path)
    records = matrix_results.read(str(path))
    assert records[0]["kind"] == "session"
    text = kernel_matrix.render(records)
    assert text.index("## 4.19.0-1-amd64: bcc engine, this machine") < \
        text.index("## 6.1.0-1-amd64: co-re engine, a guest")
    assert "| `oom_check` | fentry tcp_check_oom | verdict | derived | 1 |\n" \
           "|  |  | shift | exact | 2 |\n" \
           "|  |  | orphans | exact | not exercised |\n" in text
    assert "| `pressure` | sampled /proc/net/protocols | verdict | sampled | not exercised |" in text
    assert "1. oom_check, fentry tcp_check_oom: count = TcpExt TCPAbortOnMemory (`test_x.py::test_counts`)" \
        in text
    assert "- pressure (chose sampled /proc/net/protocols): fentry tcp_enter_memory_pressure: EPERM" in text
    assert "| 6.1.0-1-amd64 | co-re | a guest | fentry tcp_check_oom: 2/3 verified | - | - | " \
           "sampled /proc/net/protocols: not exercised |" in text
    assert "300/300" not in text and "2/2" not in text
    assert any("300/300" in line for line in kernel_matrix.figures(records))

    shuffled = records[:1] + random.Random(1).sample(records[1:], len(records) - 1)
    assert kernel_matrix.render(shuffled) == text


def test_check_mode_compares_with_the_doc(tmp_path, capsys):
    results, doc = tmp_path / "results.jsonl", tmp_path / "matrix.md"
    write_results(results)
    args = ["--results", str(results), "--out", str(doc)]
    assert kernel_matrix.main(args + ["--check"]) == 1
    assert kernel_matrix.main(args) == 0
    assert kernel_matrix.main(args + ["--check"]) == 0
    doc.write_text(doc.read_text().replace("not exercised", "verified", 1))
    assert kernel_matrix.main(args + ["--check"]) == 1
    assert "+| `oom_check`" in capsys.readouterr().out


def test_another_point_release_of_the_same_series_passes_the_check(tmp_path, capsys):
    # a fresh machine may fetch a newer Debian kernel of the series: same table
    results, doc = tmp_path / "results.jsonl", tmp_path / "matrix.md"
    write_results(results)
    args = ["--results", str(results), "--out", str(doc)]
    assert kernel_matrix.main(args) == 0
    doc.write_text(doc.read_text().replace("6.1.0-1-amd64", "6.1.0-2-amd64"))
    assert kernel_matrix.main(args + ["--check"]) == 0
    assert "other kernel releases" in capsys.readouterr().err
    doc.write_text(doc.read_text().replace("6.1.0-2-amd64", "6.2.0-1-amd64"))
    assert kernel_matrix.main(args + ["--check"]) == 1


def test_a_method_other_than_the_plans_is_refused(tmp_path):
    rec = matrix_results.Recorder("t", str(tmp_path / "r.jsonl"))
    with pytest.raises(AssertionError, match="plan says"):
        rec.check(plan("6.1"), "oom_check", "x", used="kprobe tcp_check_oom")
    with pytest.raises(AssertionError, match="not in the plan"):
        rec.check(plan("6.1"), "oom_check", "x", fields=["tw_count"])
