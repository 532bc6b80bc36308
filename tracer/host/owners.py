"""Which processes own a socket: the kernel offers only one way, a socket's
inode as the link target "socket:[INODE]" of some /proc/PID/fd/N. Reading every
fd of a busy host is slow (each fd costs some microseconds in procfs), so only
the sockets asked for are looked for, the scan stops when they are found, it is
bounded in time, and a scan cut short carries on where it stopped next time."""
from __future__ import annotations

import os
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from .tcp_sock import Sock

# How long the /proc/*/fd scan may take. procfs costs ~2 us per fd listed and ~2.5 us per
# readlink, so 100 ms covers ~20k fds: enough on most hosts, and bounded on the others.
FD_SCAN_BUDGET_S = 0.1


class Owners(NamedTuple):
    pids: Dict[int, List[int]]   # socket inode -> pids holding an fd for it
    comms: Dict[int, str]        # pid -> comm
    complete: bool               # False: the time budget ran out before the scan ended
    fds_read: int


class _OwnerMemo:
    """What the last lookup learnt, for the next one.

    Snapshots repeat every few seconds while pressure lasts, and the sockets holding memory
    then are mostly the same ones: one readlink confirms a known (pid, fd) where a scan would
    read thousands, and their processes are scanned first for new sockets. A scan cut short
    by its budget leaves a cursor, and the next one carries on from there, so on a host too
    big to read in one budget every process is still read within a few snapshots.
    """

    def __init__(self, proc_root: str = "") -> None:
        self.proc_root = proc_root
        self.fd_of: Dict[int, Tuple[int, str]] = {}      # socket inode -> (pid, fd)
        self.pids: List[int] = []
        self.cursor: Optional[Tuple[int, int]] = None    # (pid, fd entries already read)


_memo = _OwnerMemo()


def _scan_pid(proc_root: str, pid: int, wanted: Dict[str, int], deadline: float,
              skip: int = 0) -> Tuple[int, List[Tuple[int, str]], bool]:
    """(fd entries gone through, [(inode, fd)], finished) for one process.

    The first `skip` entries were read by an earlier scan: listed again, not read again.
    """
    hits: List[Tuple[int, str]] = []
    try:
        dirfd = os.open(f"{proc_root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return 0, hits, True    # exited, or not ours to read (EACCES)
    n = read = 0
    try:
        # scandir, not listdir: procfs builds each entry slowly, and a process with 100k fds
        # must not blow the budget before the first deadline check.
        with os.scandir(dirfd) as entries:
            for entry in entries:
                n += 1
                if n <= skip:
                    continue
                read += 1
                # counted from this call's first read, so every call gets somewhere
                if read & 255 == 0 and time.monotonic() >= deadline:
                    return n - 1, hits, False
                try:
                    link = os.readlink(entry.name, dir_fd=dirfd)
                except OSError:
                    continue    # closed since the listing
                inode = wanted.get(link)
                if inode is not None:
                    hits.append((inode, entry.name))
    except OSError:
        pass    # the process exited during the listing: what was read stands
    finally:
        os.close(dirfd)
    return n, hits, True


def _pid_order(proc_root: str, uids: Set[int]) -> List[int]:
    # A socket's uid is the fsuid of the task that created or accept()ed it (sock_graft sets
    # sk_uid from the new socket inode), so processes running as one of the wanted uids go
    # before the rest; within each, ascending pids as /proc lists them.
    preferred: List[int] = []
    rest: List[int] = []
    try:
        entries = list(os.scandir(proc_root))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            uid = entry.stat().st_uid
        except OSError:
            continue    # exited
        (preferred if uid in uids else rest).append(int(entry.name))
    return sorted(preferred) + sorted(rest)


def find_owners(sockets: Iterable[Sock], budget_s: float = FD_SCAN_BUDGET_S,
                proc_root: str = "/proc") -> Owners:
    """Processes holding these sockets, from /proc/PID/fd links, within `budget_s`.

    The scan stops once every socket that holds memory has an owner (idle ones are named
    if found on the way, or all are looked for if none holds any): a socket nobody visible
    holds (its owner in another pid namespace) must not cost the whole budget at every
    snapshot just to name an idle listener. So a socket shared by several processes (a
    listener inherited by pre-forked workers) may show only the first ones found. A socket
    with inode 0 has no file (an orphan, or a connection not yet accept()ed) and is not
    looked for. Threads that unshared their fd table are not looked into.
    """
    global _memo
    deadline = time.monotonic() + budget_s
    socks = [s for s in sockets if s.inode]
    wanted = {f"socket:[{s.inode}]": s.inode for s in socks}
    needed = [s for s in socks if s.mem > 0] or socks
    pids: Dict[int, List[int]] = {}
    fd_of: Dict[int, Tuple[int, str]] = {}
    memo = _memo if _memo.proc_root == proc_root else _OwnerMemo(proc_root)
    new_memo = _OwnerMemo(proc_root)

    def found(inode: int, pid: int, fd: str) -> None:
        owning = pids.setdefault(inode, [])
        if pid not in owning:
            owning.append(pid)
        fd_of.setdefault(inode, (pid, fd))

    for link, inode in wanted.items():
        known = memo.fd_of.get(inode)
        if known is None:
            continue
        pid, fd = known
        try:
            if os.readlink(f"{proc_root}/{pid}/fd/{fd}") == link:
                found(inode, pid, fd)
        except OSError:
            pass    # fd closed or process gone: scan for it like the others

    missing = {s.inode for s in needed} - set(pids)
    fds_read = 0
    if missing:
        first = [p for p in memo.pids if os.path.isdir(f"{proc_root}/{p}")]
        others = [p for p in _pid_order(proc_root, {s.uid for s in needed if s.inode in missing})
                  if p not in first]
        # Carry on from where the last scan ran out of time, round the whole list once.
        resume_pid, resume_skip = memo.cursor or (None, 0)
        start = others.index(resume_pid) if resume_pid in others else 0
        sweep = first + others[start:] + others[:start]
        for i, pid in enumerate(sweep):
            skip = resume_skip if pid == resume_pid else 0
            # At least one process per call, however small the budget: the sweep must move.
            if i and time.monotonic() >= deadline:
                new_memo.cursor = (pid, skip)
                break
            n, hits, finished = _scan_pid(proc_root, pid, wanted, deadline, skip)
            fds_read += max(n - skip, 0)
            for inode, fd in hits:
                found(inode, pid, fd)
                missing.discard(inode)
            if not missing:
                break
            if not finished:
                new_memo.cursor = (pid, n)
                break

    comms: Dict[int, str] = {}
    for owning in pids.values():
        for pid in owning:
            if pid not in comms:
                try:
                    with open(f"{proc_root}/{pid}/comm") as fh:
                        comms[pid] = fh.read().rstrip("\n")
                except OSError:
                    pass    # exited since its fd was read
    # Replaced whole, never mutated: a concurrent lookup sees the old memo or the new.
    new_memo.fd_of = fd_of
    new_memo.pids = list(dict.fromkeys(pid for pid, _fd in fd_of.values()))
    _memo = new_memo
    complete = not (missing and new_memo.cursor)
    return Owners(pids, comms, complete, fds_read)
