"""docs/performance.md's result tables against the raw JSON under docs/bench/
(scripts/bench_doc.py): the committed page matches, and a figure changed in
the page or in the JSON, or a result that does not say where it was
measured, is caught."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from scripts import bench_doc


def test_the_page_matches_the_committed_json():
    assert bench_doc.check() == []


@pytest.fixture
def copy(tmp_path):
    page = tmp_path / "performance.md"
    shutil.copy(bench_doc.PAGE, page)
    bench = tmp_path / "bench"
    shutil.copytree(bench_doc.BENCH_DIR, bench)
    return page, bench


def test_a_number_changed_in_the_page_fails(copy):
    page, bench = copy
    text = page.read_text()
    start = text.index("<!-- bench_doc: results -->")
    row = text.index("| `record`, highest rate", start)
    end = text.index("\n", row)
    line = text[row:end]
    digit = next(i for i, ch in enumerate(line) if ch.isdigit())
    changed = line[:digit] + str((int(line[digit]) + 1) % 10) + line[digit + 1:]
    page.write_text(text[:row] + changed + text[end:])
    problems = bench_doc.check(str(page), str(bench))
    assert problems and "table 'results'" in problems[0]
    assert bench_doc.main(["--check", "--page", str(page), "--bench-dir", str(bench)]) == 1
    # --write puts the JSON's figure back
    assert bench_doc.main(["--write", "--page", str(page), "--bench-dir", str(bench)]) == 0
    assert bench_doc.check(str(page), str(bench)) == []


def test_a_figure_changed_in_the_json_fails(copy):
    page, bench = copy
    data = json.loads((bench / "serve.json").read_text())
    data["idle"]["cpu_percent_of_core"] += 0.1
    (bench / "serve.json").write_text(json.dumps(data))
    problems = bench_doc.check(str(page), str(bench))
    assert any("table 'serve'" in p for p in problems)


def test_a_result_without_its_machine_is_refused(copy, capsys):
    page, bench = copy
    data = json.loads((bench / "bench.json").read_text())
    del data["machine"]["kernel"]
    (bench / "bench.json").write_text(json.dumps(data))
    assert bench_doc.main(["--check", "--page", str(page), "--bench-dir", str(bench)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no kernel" in err


def test_a_missing_table_is_reported(copy):
    page, bench = copy
    text = page.read_text().replace("<!-- bench_doc: varied -->", "<!-- moved -->")
    page.write_text(text)
    assert any("no generated table 'varied'" in p for p in bench_doc.check(str(page), str(bench)))


def test_every_result_file_says_where_it_was_measured():
    for name in sorted(os.listdir(bench_doc.BENCH_DIR)):
        if name.endswith(".json"):
            bench_doc.load(name)


def test_a_figure_changed_in_one_of_several_files_fails(copy):
    page, bench = copy
    data = json.loads((bench / "churn-normal-after-2.json").read_text())
    data["churn"]["bpf_ns_per_connection"] += 100
    (bench / "churn-normal-after-2.json").write_text(json.dumps(data))
    problems = bench_doc.check(str(page), str(bench))
    # the per-connection table reads it; the targets' row (the quiet runs) and the storm tables do not
    assert any("table 'churn'" in p for p in problems)
    assert not any("table 'targets-17'" in p for p in problems)
    assert not any("table 'storms" in p for p in problems)
    assert bench_doc.main(["--write", "--page", str(page), "--bench-dir", str(bench)]) == 0
    assert "**2132, 2609**" in page.read_text()
    # a quiet run: the targets' row and the table of the attached commands
    data = json.loads((bench / "churn-attached-trace-no-owner.json").read_text())
    net = data["churn"]["bpf_net_ns_per_connection"]
    data["churn"]["bpf_net_ns_per_connection"] += 100
    (bench / "churn-attached-trace-no-owner.json").write_text(json.dumps(data))
    problems = bench_doc.check(str(page), str(bench))
    assert any("table 'targets-17'" in p for p in problems)
    assert any("table 'churn-attached'" in p for p in problems)
    assert bench_doc.main(["--write", "--page", str(page), "--bench-dir", str(bench)]) == 0
    assert f"**{net + 100:.0f} ns** with owner tracking off" in page.read_text()


def test_a_missing_file_of_a_glob_is_refused(copy, capsys):
    page, bench = copy
    for f in bench.glob("churn-*.json"):
        f.unlink()
    assert bench_doc.main(["--check", "--page", str(page), "--bench-dir", str(bench)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err


def test_a_storm_row_comes_from_both_files(copy):
    page, bench = copy
    data = json.loads((bench / "storm-before.json").read_text())
    data["rows"][0]["cpu_us_per_event"] = 99.0
    (bench / "storm-before.json").write_text(json.dumps(data))
    problems = bench_doc.check(str(page), str(bench))
    assert any("table 'storms'" in p for p in problems)
    assert any("99.0 µs" in p for p in problems)
