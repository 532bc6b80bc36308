"""One version, from tracer/__init__.py: `tcpoom --version`, the package
metadata pip writes, the .deb's control file, the zipapp, and the header of
every recording say the same (a recording once said "0.1.0" whatever ran)."""
import os
import re
import subprocess
import sys
import types

from conftest import ROOT
from scripts import build_deb
from tracer import __version__
from tracer.cli.commands import record
from tracer.kernel.loader import Filters


def test_the_version_is_written_in_one_place_only():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "tracer.__version__"}' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    literal = re.compile(r"""["']%s["']""" % re.escape(__version__))
    for d, _, files in os.walk(os.path.join(ROOT, "tracer")):
        for name in files:
            path = os.path.join(d, name)
            if name.endswith(".py") and path != os.path.join(ROOT, "tracer", "__init__.py"):
                with open(path) as f:
                    assert not literal.search(f.read()), path


def test_tcpoom_version_says_it():
    out = subprocess.run([sys.executable, "-m", "tracer", "--version"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"tcpoom, version {__version__}"


def test_a_recordings_header_carries_it():
    cap = types.SimpleNamespace(plan=types.SimpleNamespace(engine="co-re", to_json=lambda: {}),
                                facts=types.SimpleNamespace(to_json=lambda: {}), families=[],
                                filters=Filters())
    assert record.header(cap, ["record"])["tcpoom_version"] == __version__


def test_the_deb_is_named_and_versioned_by_it(tmp_path):
    deb = build_deb.build(str(tmp_path))
    assert os.path.basename(deb) == f"tcpoom_{__version__}_all.deb"
    field = lambda name: subprocess.run(["dpkg-deb", "-f", deb, name], capture_output=True,
                                        text=True, check=True).stdout.strip()
    assert field("Version") == __version__
    assert field("Architecture") == "all"
    depends = field("Depends")
    for pkg in ("python3 (>= 3.9)", "python3-click", "python3-rich", "libbpf1"):
        assert pkg in depends
    # serve's modules are recommended, not required: every other command runs without them
    assert field("Recommends") == "bpftool, python3-prometheus-client, python3-yaml, python3-bcrypt"
    assert field("Suggests") == "python3-bpfcc"
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/tcpoom", "./usr/share/man/man1/tcpoom.1.gz",
                 "./usr/share/bash-completion/completions/tcpoom",
                 "./usr/share/tcpoom/tracer/kernel/bpfobj/tcpoom.bpf.o",
                 # the bcc engine's C text, copied from bpf/ at build time
                 "./usr/share/tcpoom/tracer/kernel/bpfobj/tcpoom_bcc.c",
                 "./usr/share/tcpoom/tracer/kernel/bpfobj/verdict.h",
                 "./usr/share/tcpoom/tracer/kernel/bpfobj/tcpoom.h"):
        assert path in listing
    assert "__pycache__" not in listing
