"""What `pip install .` installs (scripts/setup does it): every module of the
source tree, the BPF objects and the bcc engine's C text from bpf/, and the
`tcpoom` command works from there.
A package left out of pyproject.toml once broke `tcpoom report` installed."""
import os

import pytest
import shutil
import subprocess
import sys

from conftest import ROOT
from tracer.kernel import objects


@pytest.mark.integration
def test_the_installed_package_has_every_module_and_its_report_runs(tmp_path):
    # from a copy without build/: setuptools adds what an earlier build left there
    src, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "tracer"), src / "tracer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src)
    (src / "bpf").mkdir()
    for name in objects.BCC_TEXT:
        shutil.copy(os.path.join(ROOT, "bpf", name), src / "bpf")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", "--target", str(target), str(src)],
                   check=True, capture_output=True)
    source = {os.path.relpath(os.path.join(d, f), ROOT)
              for d, _, files in os.walk(os.path.join(ROOT, "tracer")) for f in files
              if f.endswith((".py", ".css", ".js")) or "/bpfobj" in d and not f.endswith(".pyc")}
    installed = {os.path.relpath(os.path.join(d, f), target)
                 for d, _, files in os.walk(target / "tracer") for f in files}
    assert source - installed == set()
    # the bcc engine's C text, kept in bpf/ only, joins the objects at build time
    for name in objects.BCC_TEXT:
        with open(os.path.join(ROOT, "bpf", name), "rb") as f:
            assert (target / "tracer" / "kernel" / "bpfobj" / name).read_bytes() == f.read()
    # the metadata's version is tracer.__version__ (pyproject.toml: dynamic)
    from tracer import __version__
    assert (target / f"tcpoom-{__version__}.dist-info").is_dir()
    # run from elsewhere, so the source tree is not on the path
    def report(fmt):
        return subprocess.run([sys.executable, "-m", "tracer", "report", "--format", fmt,
                               os.path.join(ROOT, "tests", "data", "sample.tcpoom")],
                              cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(target)),
                              capture_output=True, text=True)
    out = report("json")
    assert out.returncode == 0, out.stderr
    assert '"families"' in out.stdout or '"hosts"' in out.stdout
    # the HTML page reads its CSS and script from package files
    out = report("html")
    assert out.returncode == 0, out.stderr
    assert "<style>" in out.stdout and "data-charts-hooked" in out.stdout
