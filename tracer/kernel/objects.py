"""Where the committed BPF objects (tracer/kernel/bpfobj/) and the bcc
engine's C text are on disk.

libbpf opens the CO-RE object by path, bpftool minimises BTF against it
(btfcache.py) and bcc compiles its C text with -I on its directory: all need
real files. The objects sit next to this module. The C text and its headers
are kept in bpf/ only: a source checkout compiles them from there, and the
installed forms (setup.py for pip, scripts/build-deb, scripts/build-pyz) get
them copied next to the objects at build time (ship_bcc_text), never
committed twice. Run from a zipapp they are all inside the zip: they are
written once to a private directory named after their content, under
/run/tcpoom (root only, a tmpfs gone at reboot) where this process may write
there, else in a temporary directory removed at exit.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import zlib
from typing import Dict, Optional

from .rundir import RUN_DIR

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpfobj")
#: bpf/ of a source checkout (tracer/kernel/ is two levels below it)
SOURCE_TREE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "bpf")
#: what scripts/build-bpf builds from bpf/*.bpf.c into bpfobj/ (committed)
OBJECTS = ("tcpoom.bpf.o", "bench.bpf.o")
#: the bcc engine's C text and every header it includes, followed to the end
#: (tests/test_bcc_engine.py follows them and checks the lists agree)
BCC_TEXT = ("tcpoom_bcc.c", "verdict.h", "tcpoom.h")
#: what an installed tcpoom has in bpfobj/
NAMES = OBJECTS + BCC_TEXT

_extracted: Optional[str] = None


def directory() -> str:
    """A directory holding NAMES as files."""
    global _extracted
    if os.path.isdir(HERE):
        return HERE
    if _extracted is None:
        _extracted = _extract(_read_packaged())
    return _extracted


def path(name: str) -> str:
    return os.path.join(directory(), name)


def bcc_directory() -> str:
    """A directory holding BCC_TEXT as files: bpf/ itself in a source
    checkout, else what the installed form shipped next to the objects."""
    if os.path.isfile(os.path.join(SOURCE_TREE, BCC_TEXT[0])):
        return SOURCE_TREE
    return directory()


def ship_bcc_text(bpf_dir: str, into: str) -> None:
    """Copy BCC_TEXT from bpf/ into an installed form's bpfobj/ (at build
    time: setup.py, scripts/build_deb.py, scripts/build_pyz.py)."""
    os.makedirs(into, exist_ok=True)
    for name in BCC_TEXT:
        shutil.copyfile(os.path.join(bpf_dir, name), os.path.join(into, name))


def _read_packaged() -> Dict[str, bytes]:
    # importlib.resources.files is 3.9+ and reads through the zip importer
    from importlib.resources import files
    base = files(__package__).joinpath("bpfobj")
    return {name: base.joinpath(name).read_bytes() for name in NAMES}


def _extract(contents: Dict[str, bytes]) -> str:
    digest = 0
    for name in NAMES:
        digest = zlib.crc32(contents[name], digest)
    target = os.path.join(RUN_DIR, f"bpfobj-{digest:08x}")
    try:
        os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
        if os.stat(RUN_DIR).st_uid != os.geteuid():
            raise PermissionError(f"{RUN_DIR} is not ours")
        _write_all(target, contents)
        return target
    except OSError:
        private = tempfile.mkdtemp(prefix="tcpoom-bpfobj-")
        atexit.register(shutil.rmtree, private, True)
        _write_all(private, contents)
        return private


def _write_all(target: str, contents: Dict[str, bytes]) -> None:
    os.makedirs(target, mode=0o700, exist_ok=True)
    for name, data in contents.items():
        dest = os.path.join(target, name)
        try:
            with open(dest, "rb") as f:
                if f.read() == data:
                    continue
        except OSError:
            pass
        # another tcpoom may be starting from the same zipapp: whole files only
        fd, part = tempfile.mkstemp(prefix=f".{name}.", dir=target)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(part, dest)
