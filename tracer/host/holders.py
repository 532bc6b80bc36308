"""Holders: which TCP sockets hold the memory, and which processes own them.

When TCP enters memory pressure the cause is almost always a few sockets with large queues:
a consumer that stopped reading (its receive queue fills up to its rcvbuf) or a peer that
stopped acknowledging (the sender's write queue fills up to its sndbuf), or orphans that the
application closed with unsent data. A snapshot lists those sockets, biggest first, with the
figures `ss -tmp` prints, so a report can name the slow consumer.

Sockets come from sock_diag (NETLINK_SOCK_DIAG, `SOCK_DIAG_BY_FAMILY`), which is what `ss`
uses and which reports the kernel's own memory figures per socket (skmem). If that fails
(a kernel without inet_diag/tcp_diag, or a sandbox that forbids netlink) /proc/net/tcp and
tcp6 give the queue lengths without skmem.

Processes are found from /proc/PID/fd links, for the top sockets only, within a time
budget (tracer/host/owners.py).

Here: gather the sockets (tracer/host/sock_diag.py, else tracer/host/proc_net_tcp.py),
rank them by the memory they hold, and name the owners of the heaviest. The lines
`ss -tmp` would print are in tracer/host/holders_lines.py.
"""
from __future__ import annotations

import heapq
import time
from typing import List, NamedTuple, Optional, Tuple

from tracer.host import cgroups as _cgroups
from tracer.host import netns as _netns
from tracer.host.netns import NetnsRef
from .holders_lines import format_holders
from .owners import FD_SCAN_BUDGET_S, Owners, find_owners
from .proc_net_tcp import parse_proc_net_tcp
from .proc_net_tcp import tcp_sockets as _proc_sockets
from .sock_diag import (INET_DIAG_SKMEMINFO, NLMSG_DONE, NLMSG_ERROR, SOCK_DIAG_BY_FAMILY,
                        DiagReply, decode_diag_msg, diag_request, parse_diag_reply)
from .sock_diag import tcp_sockets as _netlink_sockets
from .tcp_sock import SKMEM_FIELDS, TCP_STATES, Sock

class _Gathered(NamedTuple):
    netns: int
    source: str
    sockets: List[Sock]
    complete: bool
    netlink_error: Optional[str]


def _gather(source: str = "auto") -> _Gathered:
    """All TCP sockets of the calling thread's namespace (run it inside the namespace)."""
    ns = _netns.netns_inode(None)
    netlink_error = None
    if source in ("auto", "netlink"):
        try:
            sockets, complete = _netlink_sockets()
            return _Gathered(ns, "netlink", sockets, complete, None)
        except OSError as exc:
            if source == "netlink":
                raise
            netlink_error = str(exc) or type(exc).__name__
    sockets, complete = _proc_sockets()
    return _Gathered(ns, "proc", sockets, complete, netlink_error)


_ORPHAN_STATES = {4, 5, 7, 9, 11}   # FIN_WAIT1/2, CLOSE, LAST_ACK, CLOSING


def _owner_kind(sock: Sock, pids: List[int]) -> str:
    if sock.inode == 0:
        # No struct socket means no file: the application closed it (the kernel finishes
        # the close on its own, memory and all), or it waits in a listener's accept queue.
        return "orphan" if sock.state in _ORPHAN_STATES else "unaccepted"
    # "unknown": not found within the budget, held by a process this /proc does not show
    # (another pid namespace), only in flight in an SCM_RIGHTS message, or a kernel socket
    # with no fd at all (NFS, iSCSI, MPTCP subflows).
    return "process" if pids else "unknown"


def _entry(sock: Sock, owners: Owners) -> dict:
    pids = owners.pids.get(sock.inode, []) if sock.inode else []
    comm = next((owners.comms[p] for p in pids if p in owners.comms), None)
    entry = {
        "af": sock.af,
        "local": sock.local,
        "remote": sock.remote,
        "state": TCP_STATES.get(sock.state, str(sock.state)),
        "rx_queue": sock.rx_queue,
        "tx_queue": sock.tx_queue,
        "mem": sock.mem,
        "inode": sock.inode,
        "uid": sock.uid,
        "pids": list(pids),
        "comm": comm,
        "owner": _owner_kind(sock, pids),
    }
    if pids:
        # which service or container: the cgroups of the (first) holding process
        v2, mem = _cgroups.of_pid(pids[0])
        entry["cgroup"], entry["memcg"] = v2, mem
        entry["container"] = _cgroups.label_of(v2, mem)
    if sock.skmem is not None:
        entry["skmem"] = dict(sock.skmem)
    if sock.accept_queue is not None:
        entry["accept_queue"] = sock.accept_queue
        entry["accept_backlog"] = sock.accept_backlog
    return entry


def _heaviest(sock: Sock) -> Tuple[int, int, int]:
    return sock.mem, sock.rx_queue + sock.tx_queue, sock.inode


def snapshot(top: int = 20, netns: NetnsRef = None, *,
             fd_scan_budget_s: float = FD_SCAN_BUDGET_S, source: str = "auto") -> dict:
    """The `top` TCP sockets holding the most memory in a namespace, with their processes.

    netns None is the caller's namespace; any other reference (name, path, inode) is read
    from a helper thread inside it (tracer.host.netns); a reference that names no namespace
    raises NetnsError, one the caller may not enter OSError. Sockets vanishing, unreadable
    /proc/PID/fd and short dumps do not raise: `sockets_complete` and `owners_complete`
    say when the picture is partial. `source` is "auto" (sock_diag, else /proc), "netlink"
    or "proc"; with /proc there is no skmem and `mem` is the queued payload.

    Totals cover every TCP socket of the namespace but TIME_WAIT ones and pending
    connection requests, which hold no queues. `rx_bytes_total` and `tx_bytes_total` are
    payload bytes (unread, unacknowledged); `mem_bytes_total` sums `mem`, the bytes each
    socket has charged against tcp_mem. Each entry of `top` also says `owner`: "process",
    "orphan" (closed by its application), "unaccepted" (in a listener's accept queue) or
    "unknown"; listeners carry `accept_queue` and `accept_backlog`, their queues being
    connections, not bytes.
    """
    ts_ns = time.monotonic_ns()
    if netns is None:
        gathered = _gather(source)
    else:
        gathered = _netns.run_in_netns(netns, _gather, source)
    sockets = gathered.sockets
    heaviest = heapq.nlargest(max(top, 0), sockets, key=_heaviest)
    # Processes are looked up from this thread: /proc/PID/fd is the same from every netns.
    owners = find_owners(heaviest, fd_scan_budget_s)
    result = {
        "ts_ns": ts_ns,
        "netns": gathered.netns,
        "source": gathered.source,
        "sockets_total": len(sockets),
        "rx_bytes_total": sum(s.rx_queue for s in sockets),
        "tx_bytes_total": sum(s.tx_queue for s in sockets),
        "mem_bytes_total": sum(s.mem for s in sockets),
        "sockets_complete": gathered.complete,
        "owners_complete": owners.complete,
        "top": [_entry(s, owners) for s in heaviest],
    }
    if gathered.netlink_error:
        result["netlink_error"] = gathered.netlink_error
    # socket memory per memory cgroup, against its limit (memory.stat sock / memory.kmem.tcp)
    try:
        result["memcgs"] = [m.to_json() for m in _cgroups.sock_memory_all(top=10)]
    except OSError:
        pass
    return result


__all__ = [
    "Sock", "DiagReply", "Owners", "snapshot", "format_holders", "find_owners",
    "diag_request", "parse_diag_reply", "decode_diag_msg", "parse_proc_net_tcp",
    "FD_SCAN_BUDGET_S", "SKMEM_FIELDS", "TCP_STATES",
    "INET_DIAG_SKMEMINFO", "NLMSG_DONE", "NLMSG_ERROR", "SOCK_DIAG_BY_FAMILY",
]
