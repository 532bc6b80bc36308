"""Bad input: one clear line, a non-zero exit code, no traceback."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def tcpoom(*args, no_caps=False):
    cmd = [sys.executable, "-m", "tracer", *args]
    if no_caps:
        # root without any capability, as in a locked-down container
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    # TCPOOM_NO_PRELOAD: as root, `tcpoom trace` loads the BPF object on a
    # second thread while it parses the options; a usage error needs no BPF
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TCPOOM_NO_PRELOAD="1")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("args,code,words", [
    (["trace", "--port", "70000"], 2, "--port"),
    (["trace", "--family", "nope"], 2, "--family"),
    (["trace", "--ringbuf-size", "5000"], 2, "power of two"),
    (["trace", "--netns", "no-such-namespace"], 2, "no network namespace named"),
    (["frobnicate"], 2, "No such command"),
    (["probes", "--facts", "/nonexistent.json"], 2, "does not exist"),
])
def test_bad_input_is_one_line(args, code, words):
    r = tcpoom(*args)
    assert r.returncode == code, r.stderr
    assert words in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.kernel
def test_not_root_gets_advice_not_a_traceback():
    r = tcpoom("trace", "--duration", "1", no_caps=True)
    assert r.returncode == 77
    assert "needs root" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_probes_json_from_recorded_facts():
    import json
    r = tcpoom("probes", "--json", "--facts", os.path.join(ROOT, "tests", "data", "facts-6.1-debian.json"))
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["families"]["oom_check"]["method"] == "fentry"
    assert plan["families"]["oom_check"]["fields"]["shift"]["fidelity"] == "exact"
