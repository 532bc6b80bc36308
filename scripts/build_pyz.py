"""dist/tcpoom.pyz: tcpoom in one file for a host in trouble, where only
python3 (3.9+) and libbpf1 are installed: `python3 tcpoom.pyz trace`.
scripts/build-pyz runs it.

Inside: the tracer package with its BPF objects and the bcc engine's C text
copied from bpf/ (tracer/kernel/objects.py writes them out to /run/tcpoom at
the first load: libbpf opens objects by path), and click, rich and
prometheus_client (serve) with their pure-Python dependencies, as wheels for
Python 3.9 from PyPI (`pip download`, pip's cache after the first build),
their licences kept in their .dist-info directories.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipapp
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tracer import __version__  # noqa: E402
from tracer.kernel import objects  # noqa: E402

#: the oldest Python the zipapp runs on, and what pip resolves the wheels for
PYTHON = "3.9"
#: prometheus_client is pure Python too: `serve` works from the zipapp (its
#: --web-config needs PyYAML and bcrypt, which are not: install them to use it)
REQUIREMENTS = ("click>=8.0,<9", "rich>=12.0", "prometheus_client>=0.9")

MAIN = f"""# tcpoom {__version__}, a zipapp (scripts/build-pyz)
import sys

if sys.version_info < (3, 9):
    sys.stderr.write("tcpoom: needs Python 3.9 or newer, this is %d.%d\\n" % sys.version_info[:2])
    sys.exit(1)

from tracer.cli.entry import main  # noqa: E402

sys.exit(main())
"""


def vendor(into: str) -> list:
    """click, rich, prometheus_client and what they need, unpacked from Python 3.9 wheels."""
    with tempfile.TemporaryDirectory(prefix="tcpoom-wheels-") as wheels:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                            "--only-binary=:all:", "--python-version", PYTHON, "--dest", wheels,
                            *REQUIREMENTS], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"build-pyz: pip download failed: {r.stderr.strip().splitlines()[-1:]}")
        names = sorted(os.listdir(wheels))
        for name in names:
            if not name.endswith("-none-any.whl"):
                raise SystemExit(f"build-pyz: {name} is not pure Python: it cannot go in a zipapp")
            with zipfile.ZipFile(os.path.join(wheels, name)) as whl:
                whl.extractall(into)
    return names


def build(dist: str) -> str:
    os.makedirs(dist, exist_ok=True)
    out = os.path.join(dist, "tcpoom.pyz")
    with tempfile.TemporaryDirectory(prefix="tcpoom-pyz-") as stage:
        wheels = vendor(stage)
        shutil.copytree(os.path.join(ROOT, "tracer"), os.path.join(stage, "tracer"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # the bcc engine's C text, kept in bpf/ only, beside the objects
        objects.ship_bcc_text(os.path.join(ROOT, "bpf"), os.path.join(stage, "tracer", "kernel", "bpfobj"))
        with open(os.path.join(stage, "__main__.py"), "w") as f:
            f.write(MAIN)
        with open(os.path.join(stage, "VENDORED.txt"), "w") as f:
            f.write("".join(w + "\n" for w in wheels))
        # no scripts (bin/) from the wheels: nothing runs them in a zipapp
        for d in os.listdir(stage):
            if d.endswith(".data"):
                shutil.rmtree(os.path.join(stage, d))
        part = out + ".part"
        zipapp.create_archive(stage, part, interpreter="/usr/bin/env python3", compressed=True)
        os.chmod(part, 0o755)
        os.replace(part, out)
    return out


if __name__ == "__main__":
    print(build(os.path.join(ROOT, "dist")))
