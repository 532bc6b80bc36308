"""First contact: help with examples for every command, a top-level help that
cuts nothing, -V, findings worst first in every format, prose without Python
reprs, and the terminal report whole at 80 columns."""
import json
import os
import re

import pytest

from conftest import DATA
from tracer.cli import app as cli
from tracer.cli.commands.report import read_recordings
from tracer.render.reporters import render

SAMPLE = os.path.join(DATA, "sample.tcpoom")


def out_of(capsys, *args):
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", [n for _, n in cli.COMMANDS])
def test_every_command_has_examples(capsys, name):
    text = out_of(capsys, name, "--help")
    examples = text.split("Examples:", 1)[1].split("Options:", 1)[0].strip().splitlines()
    assert examples and all(e.strip().startswith(("tcpoom " + name, "duckdb")) for e in examples), examples


def test_top_level_help_cuts_nothing(capsys):
    text = out_of(capsys, "--help")
    commands = text.split("Commands:", 1)[1]
    assert "..." not in commands
    for _, name in cli.COMMANDS:
        assert re.search(rf"^  {name}\s+\S", text, re.M)


def test_dash_v_prints_the_version(capsys):
    assert re.match(r"tcpoom, version \S+", out_of(capsys, "-V"))


@pytest.fixture(scope="module")
def models():
    return read_recordings([SAMPLE])[0]


RANK = {"critical": 0, "warning": 1, "info": 2, "ok": 3}


def test_findings_are_worst_first_in_every_format(models):
    doc = json.loads(render("json", models))
    host = doc[0] if isinstance(doc, list) else doc["hosts"][0]
    sev = [f["severity"] for f in host["diagnosis"]]
    assert sev == sorted(sev, key=RANK.get) and sev[0] == "critical"
    for fmt in ("terminal", "markdown"):
        seen = re.findall(r"\[(critical|warning|info|ok)\]", render(fmt, models, width=100))
        assert seen == sorted(seen, key=RANK.get), fmt
    seen = re.findall(r'class="finding (critical|warning|info|ok)', render("html", models))
    assert seen and seen == sorted(seen, key=RANK.get)


def test_no_python_repr_in_prose(models):
    for fmt in ("terminal", "markdown"):
        text = render(fmt, models, width=100)
        assert not re.search(r"\{'|\['|': ", text), fmt


def test_the_terminal_report_is_whole_at_80_columns(models):
    text = render("terminal", models, width=80)
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "too_many_orphans 40" in text and "TCPTimeWaitOverflow" in text
