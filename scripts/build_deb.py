"""dist/tcpoom_<version>_all.deb: tcpoom on Debian's own python3-click,
python3-rich and libbpf1, built with dpkg-deb alone (no network, no
debhelper). scripts/build-deb runs it.

The package is private to tcpoom: the modules go to /usr/share/tcpoom (a
top-level module named `tracer` has no place in dist-packages), and
/usr/bin/tcpoom puts that directory first on the path. The bcc engine's C
text joins them from bpf/ (tracer/kernel/objects.py). The objects in
tracer/kernel/bpfobj/ are BPF bytecode for little-endian machines (bpfel), the same
on every such architecture: Architecture all.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tracer import __version__  # noqa: E402
from tracer.kernel import objects  # noqa: E402

PREFIX = "/usr/share/tcpoom"
DEPENDS = "python3 (>= 3.9), python3-click (>= 8.0), python3-rich (>= 12.0), libbpf1"
#: python3-prometheus-client, -yaml, -bcrypt: `tcpoom serve` only (the endpoint,
#: --web-config and its basic auth); every other command runs without them
RECOMMENDS = "bpftool, python3-prometheus-client, python3-yaml, python3-bcrypt"
SUGGESTS = "python3-bpfcc"

LAUNCHER = f"""#!/usr/bin/python3
# tcpoom, installed by its Debian package: the modules are in {PREFIX}
import sys

sys.path.insert(0, "{PREFIX}")
from tracer.cli.entry import main  # noqa: E402

sys.exit(main())
"""

# byte-compiled at install, removed before removal: the files dpkg does not list
POSTINST = f"""#!/bin/sh
set -e
if [ "$1" = configure ]; then
    python3 -m compileall -q {PREFIX}/tracer >/dev/null || true
fi
"""
PRERM = f"""#!/bin/sh
set -e
find {PREFIX} -type d -name __pycache__ -prune -exec rm -rf {{}} + 2>/dev/null || true
"""

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tcpoom

Files: *
License: GPL-2.0-only
 On Debian systems the full text of the GNU General Public License version 2
 is in /usr/share/common-licenses/GPL-2.
"""

DESCRIPTION = """trace every TCP socket-memory decision of the Linux kernel
 tcpoom shows the conditions behind "Out of socket memory", "too many
 orphaned sockets", "out of memory -- consider tuning tcp_mem" and silent
 TIME_WAIT bucket overflows, every one, with the figures that drove it,
 which the kernel's rate-limited log does not. BPF programs (CO-RE, loaded
 through libbpf; no compiler on the host) count every decision exactly.
 .
 Commands: live (a dashboard), trace, record, report, replay, doctor,
 probes, export, parse."""


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _gzip(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as f:
        f.write(data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def completion() -> str:
    """click's own bash completion script for `tcpoom` (click 8: bash_source)."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, _TCPOOM_COMPLETE="bash_source", PYTHONPATH=path)
    r = subprocess.run([sys.executable, "-c", "from tracer.cli.app import cli; cli(prog_name='tcpoom')"],
                       env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0 or "complete" not in r.stdout:
        raise SystemExit(f"build-deb: click wrote no completion script: {r.stderr.strip()}")
    return r.stdout


def stage(into: str) -> None:
    shutil.copytree(os.path.join(ROOT, "tracer"), into + PREFIX + "/tracer",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # the bcc engine's C text, kept in bpf/ only, beside the objects
    objects.ship_bcc_text(os.path.join(ROOT, "bpf"), into + PREFIX + "/tracer/kernel/bpfobj")
    _write(into + "/usr/bin/tcpoom", LAUNCHER, 0o755)
    from scripts.manpage import render
    _gzip(into + "/usr/share/man/man1/tcpoom.1.gz", render().encode())
    _write(into + "/usr/share/bash-completion/completions/tcpoom", completion())
    doc = into + "/usr/share/doc/tcpoom"
    _write(doc + "/copyright", COPYRIGHT)
    with open(os.path.join(ROOT, "README.md"), "rb") as f:
        _gzip(doc + "/README.md.gz", f.read())
    size_kb = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(into) for f in files) // 1024
    control = (f"Package: tcpoom\nVersion: {__version__}\nArchitecture: all\n"
               f"Maintainer: tcpoom developers <tcpoom@localhost>\nSection: net\nPriority: optional\n"
               f"Installed-Size: {size_kb}\nDepends: {DEPENDS}\nRecommends: {RECOMMENDS}\n"
               f"Suggests: {SUGGESTS}\nDescription: {DESCRIPTION}\n")
    _write(into + "/DEBIAN/control", control)
    _write(into + "/DEBIAN/postinst", POSTINST, 0o755)
    _write(into + "/DEBIAN/prerm", PRERM, 0o755)
    for d, dirs, files in os.walk(into):
        for name in dirs:
            os.chmod(os.path.join(d, name), 0o755)


def build(dist: str) -> str:
    if not shutil.which("dpkg-deb"):
        raise SystemExit("build-deb: dpkg-deb not found (Debian/Ubuntu: it is in dpkg)")
    os.makedirs(dist, exist_ok=True)
    out = os.path.join(dist, f"tcpoom_{__version__}_all.deb")
    with tempfile.TemporaryDirectory(prefix="tcpoom-deb-") as tmp:
        pkg = os.path.join(tmp, "pkg")
        os.makedirs(pkg)
        os.chmod(pkg, 0o755)
        stage(pkg)
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", pkg, out],
                       check=True, stdout=subprocess.DEVNULL)
    return out


if __name__ == "__main__":
    print(build(os.path.join(ROOT, "dist")))
