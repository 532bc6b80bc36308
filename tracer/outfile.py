"""Where a command writes: never over one of its inputs, never over a recording
unless asked, and never half a file.

A report or an export written over its own recording destroys the evidence
(`open(out, "w")` truncates the input before the first byte is read). So every
output path is checked against the inputs by inode (a hard link or a symlink
names the same file), an existing recording is only replaced with --force, and
the text goes to a temporary file in the same directory, renamed into place
once complete: a crash or a full disk leaves the old file or the new one,
never a torn mix.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import IO, Iterable, Iterator, Optional

from .errors import TcpoomError

MAGIC = b"TCPOOM\r\n"       # tracefile.MAGIC, without importing the reader here


class OutputError(TcpoomError):
    """An output path that cannot or must not be written."""

    exit_code = 1


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)            # follows symlinks: the file a link names
    except OSError:
        return None


def is_special(path: str) -> bool:
    """An existing path that is not a regular file (/dev/null, /dev/stdout, a
    FIFO): written in place, never replaced by a rename."""
    st = _stat(path)
    return st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


def is_recording(path: str) -> bool:
    st = _stat(path)
    if st is None or not stat.S_ISREG(st.st_mode):     # never open a FIFO to peek
        return False
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def check(path: str, inputs: Iterable[str] = (), force: bool = False) -> None:
    """Refuse an output that is one of the inputs (same device and inode), or
    an existing recording without force, or a directory."""
    st = _stat(path)
    if st is None:
        return
    for p in inputs:
        sti = _stat(p)
        if sti is not None and (sti.st_dev, sti.st_ino) == (st.st_dev, st.st_ino):
            raise OutputError(f"{path}: is the input {p}; refusing to write over it")
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory")
    if is_recording(path) and not force:
        raise OutputError(f"{path}: a tcpoom recording exists there; use --force to replace it")


def _describe(path: str, e: OSError) -> str:
    what = e.strerror or str(e)
    if e.errno in (13, 1):           # EACCES, EPERM
        return f"cannot write {path}: {what} (run as a user who may write there, or choose another -o)"
    return f"cannot write {path}: {what}"


def _umask() -> int:
    # mkstemp makes 0600 whatever the umask; read it (set and put back) to honour it
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(path: str, mode: int = 0o600) -> "tuple[int, str]":
    """(fd, name) of a new temporary file in path's directory, for a rename into place."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
        os.fchmod(fd, mode)
    except OSError as e:
        raise OutputError(_describe(path, e)) from None
    return fd, tmp


def rename_into_place(tmp: str, path: str) -> None:
    try:
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(_describe(path, e)) from None


@contextlib.contextmanager
def atomic_text(path: str, inputs: Iterable[str] = (), force: bool = False,
                newline: Optional[str] = None) -> Iterator[IO[str]]:
    """A text file object for `path`: checked first (check()), written to a
    temporary file and renamed into place when the block ends without error.
    Mode 0644 less the umask unless an existing file had another (a report is
    for sharing; a recording's 0600 is kept where one is replaced; serve's
    incident reports run under umask 077 because they name processes and peers)."""
    check(path, inputs, force)
    if is_special(path):
        try:
            f = open(path, "w", newline=newline)
        except OSError as e:
            raise OutputError(_describe(path, e)) from None
        with f:
            yield f
        return
    st = _stat(path)
    fd, tmp = temp_beside(path, (st.st_mode & 0o777) if st else 0o644 & ~_umask())
    try:
        with os.fdopen(fd, "w", newline=newline) as f:
            yield f
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(_describe(path, e)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    rename_into_place(tmp, path)
