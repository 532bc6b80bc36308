"""Network namespace helpers.

A namespace can be referred to in three ways, all accepted by every function here:
- a name, as made by `ip netns add NAME` (a bind mount under /run/netns),
- a path to an nsfs file (/run/netns/NAME, /proc/PID/ns/net, ...),
- an inode number, the identity the kernel reports for a namespace (and what a BPF
  program sees as `sk->__sk_common.skc_net.net->ns.inum`).

Work that must happen inside another namespace runs on a short-lived helper thread that
setns()es into it. A namespace belongs to a task, and a Python thread is a kernel task, so
only that thread moves: the main thread, and everything the caller does afterwards, stays
where it was. Sockets and /proc/thread-self/net files opened on the helper thread belong to
the target namespace for their whole life.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from typing import Any, Callable, Iterator, Optional, Tuple, Union

from tracer.errors import TcpoomError

NetnsRef = Union[None, int, str, "os.PathLike[str]"]

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

# `ip netns` may take a while on a busy host, but never this long.
IP_TIMEOUT_S = 10.0


class NetnsError(TcpoomError):
    """A namespace could not be found, entered, created or deleted."""


def netns_inode(ref: NetnsRef = None) -> int:
    """The inode number of a namespace; None means the calling thread's own."""
    if ref is None:
        # thread-self, not self: a helper thread inside another namespace asks about its own.
        return os.stat("/proc/thread-self/ns/net").st_ino
    if isinstance(ref, int):
        return ref
    return os.stat(resolve(ref)).st_ino


def resolve(ref: NetnsRef) -> str:
    """A path that opens to the namespace `ref` names."""
    if ref is None:
        return "/proc/thread-self/ns/net"
    if isinstance(ref, int):
        return _path_of_inode(ref)
    ref = os.fspath(ref)
    if os.sep not in ref:
        path = os.path.join(NETNS_RUN_DIR, ref)
        if not os.path.exists(path):
            raise NetnsError(f"no network namespace named {ref!r} in {NETNS_RUN_DIR}")
        return path
    if not os.path.exists(ref):
        raise NetnsError(f"no such namespace file: {ref}")
    return ref


def lookup(ref: str) -> Tuple[str, int]:
    """(path, inode) of the namespace a user named on the command line: a name
    (ip netns), a path, or an inode number."""
    key: NetnsRef = int(ref) if ref.isdigit() else ref
    path = resolve(key)
    return path, netns_inode(path)


def _path_of_inode(inode: int) -> str:
    # Named namespaces first: their path stays valid while processes come and go.
    candidates = []
    if os.path.isdir(NETNS_RUN_DIR):
        candidates += [os.path.join(NETNS_RUN_DIR, n) for n in sorted(os.listdir(NETNS_RUN_DIR))]
    candidates += [f"/proc/{pid}/ns/net" for pid in os.listdir("/proc") if pid.isdigit()]
    for path in candidates:
        try:
            if os.stat(path).st_ino == inode:
                return path
        except OSError:
            continue  # the process exited, or the mount went away, while we looked
    raise NetnsError(f"no network namespace with inode {inode} is reachable "
                     f"(not named in {NETNS_RUN_DIR} and held by no process)")


_libc = None


def _setns(fd: int, nstype: int) -> None:
    global _libc
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, nstype)
        return
    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run_in_netns(ref: NetnsRef, fn: Callable[..., Any], *args: Any,
                 timeout: Optional[float] = None) -> Any:
    """Call fn(*args) on a fresh thread inside namespace `ref`; return or raise what it did.

    With ref None the call still goes through a thread, so fn sees the same conditions
    (thread-local state, /proc/thread-self) whichever namespace it runs in. After
    `timeout` seconds TimeoutError is raised; the thread (a daemon) is left to finish.
    """
    path = resolve(ref)
    outcome: dict = {}

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            outcome["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread, re-raised there
            outcome["error"] = exc

    worker = threading.Thread(target=body, name=f"netns:{os.path.basename(path)}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} did not finish in {timeout} s "
                           f"inside {path}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _ip_netns(*args: str) -> None:
    import subprocess   # only for `ip`: not on the tracer's start-up path
    try:
        proc = subprocess.run(["ip", "netns", *args], capture_output=True, text=True,
                              timeout=IP_TIMEOUT_S)
    except FileNotFoundError:
        raise NetnsError("`ip` (iproute2) is not installed") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`ip netns {' '.join(args)}` did not finish in {IP_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        raise NetnsError(f"`ip netns {' '.join(args)}` failed: {proc.stderr.strip()}")


def create(name: str) -> int:
    """Make a named namespace (ip netns add) and return its inode."""
    _ip_netns("add", name)
    return netns_inode(name)


def delete(name: str) -> None:
    """Remove a named namespace. Its sockets live on until nothing holds the namespace."""
    _ip_netns("del", name)


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def _set_loopback_up() -> None:
    import subprocess   # only for `ip`: not on the tracer's start-up path
    # A new namespace has `lo` down, and 127.0.0.0/8 is unusable until it is up. SIOCSIFFLAGS
    # would do, but `ip` is already a dependency and says clearly what went wrong.
    proc = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True,
                          timeout=IP_TIMEOUT_S)
    if proc.returncode != 0:
        raise NetnsError(f"`ip link set lo up` failed: {proc.stderr.strip()}")


@contextlib.contextmanager
def temporary(prefix: str = "tcpoom-") -> Iterator[str]:
    """A fresh named namespace with `lo` up, deleted on leaving, whatever the exit."""
    import uuid

    name = f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        create(name)
        # The child `ip` process is forked from the helper thread, so it starts inside.
        run_in_netns(name, _set_loopback_up)
        yield name
    finally:
        try:
            _delete_quietly(name)
        except KeyboardInterrupt:
            _delete_quietly(name)  # a second Ctrl-C during clean-up must not leak it
            raise


def _delete_quietly(name: str) -> None:
    if not exists(name):
        return  # create() failed, or someone else removed it
    try:
        delete(name)
    except NetnsError:
        if exists(name):
            raise


__all__ = [
    "NetnsError", "NetnsRef", "netns_inode", "resolve", "run_in_netns", "create", "delete",
    "exists", "temporary",
]
