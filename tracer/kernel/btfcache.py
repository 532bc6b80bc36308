"""A minimised copy of the kernel's BTF for CO-RE relocation, kept per boot.

libbpf relocates the object against the kernel's BTF at every start: it
parses all of it (126k types on 6.18) and searches it for every local type,
about 30 of the 57 ms a load takes here. `bpftool gen min_core_btf` ("BTFGen")
writes the few types and members this object's relocations use; libbpf reads
that instead (btf_custom_path) and the relocations come out the same.

The copy is made in the background after a start (bpftool, where installed;
without it nothing changes) and kept in /run (a tmpfs: gone at reboot) under
the boot id and a checksum of the object, so the next start uses it.
TCPOOM_NO_BTF_CACHE=1 turns it off.
"""
from __future__ import annotations

import os
import shutil
import time
import zlib
from typing import Dict, Optional

from .rundir import RUN_DIR

CACHE_DIR = RUN_DIR
VMLINUX = "/sys/kernel/btf/vmlinux"


def _enabled() -> bool:
    return os.environ.get("TCPOOM_NO_BTF_CACHE") != "1" and os.path.exists(VMLINUX)


_names: Dict[str, str] = {}      # object path -> its copy's file name, once a process


def path_for(object_path: str) -> Optional[str]:
    name = _names.get(object_path)
    if name is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                boot_id = f.read().strip()
            with open(object_path, "rb") as f:
                # the object's content, not its path or mtime: every install or
                # checkout of the same tcpoom shares one copy (~0.2 ms for 365 KB)
                digest = zlib.crc32(f.read())
        except OSError:
            return None
        name = _names[object_path] = f"min-{boot_id}-{digest:08x}.btf"
    return os.path.join(CACHE_DIR, name)


def cached(object_path: str) -> Optional[str]:
    """The minimised BTF for this object on this boot, if made already."""
    if not _enabled():
        return None
    path = path_for(object_path)
    return path if path and os.path.exists(path) else None


def forget(object_path: str) -> None:
    """Drop a copy that libbpf could not use."""
    path = path_for(object_path)
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def make_in_background(object_path: str) -> None:
    """Start bpftool on it if there is no copy yet; never waits, never fails."""
    if not _enabled() or os.geteuid() != 0:
        return
    path = path_for(object_path)
    bpftool = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.path.exists(p)), None)
    if not path or not bpftool or os.path.exists(path):
        return
    import subprocess
    try:
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp"
        # the file bpftool writes is also the lock: one maker at a time (a
        # tracer started again while a slow machine is still at it starts no
        # second one); one left by a killed maker is stale after a minute
        try:
            if time.time() - os.stat(tmp).st_mtime > 60:
                os.unlink(tmp)
        except OSError:
            pass
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return
        # written aside, renamed when whole: a start never reads half a file
        subprocess.Popen(["/bin/sh", "-c", '"$0" gen min_core_btf "$1" "$2" "$3" && mv -f "$2" "$4" || rm -f "$2"',
                          bpftool, VMLINUX, tmp, object_path, path],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    except OSError:
        pass
