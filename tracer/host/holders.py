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

Processes are found the only way the kernel offers: a socket's inode appears as the link
target "socket:[INODE]" of some /proc/PID/fd/N. Reading every fd of a busy host is slow
(each fd costs some microseconds in procfs), so only the top sockets are looked for, the
scan stops when the ones holding memory are found, it is bounded in time, and a scan cut
short carries on where it stopped at the next snapshot.
"""

from __future__ import annotations

import heapq
import os
import socket
import struct
import sys
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from tracer.host import cgroups as _cgroups
from tracer.host import netns as _netns
from tracer.host.netns import NetnsRef

# Values from include/uapi/linux/{netlink,sock_diag,inet_diag}.h.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300              # NLM_F_ROOT | NLM_F_MATCH
NLM_F_DUMP_INTR = 0x10          # the hash tables changed while the dump walked them
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_SKMEMINFO = 7

TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV", 13: "BOUND_INACTIVE",
}
TCP_TIME_WAIT = 6
TCP_LISTEN = 10

# Every state but TIME_WAIT, NEW_SYN_RECV and BOUND_INACTIVE: time-wait buckets and pending
# connection requests are mini-sockets without queues (nothing charged to tcp_mem), and
# there can be hundreds of thousands of them on the hosts where a snapshot matters.
DUMP_STATES = sum(1 << s for s in range(1, 12) if s != TCP_TIME_WAIT)

# The order of the u32 array in INET_DIAG_SKMEMINFO (enum sk_meminfo; backlog came in 3.x,
# drops in 4.4: older kernels send a shorter array).
SKMEM_FIELDS = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc", "wmem_queued",
                "optmem", "backlog", "drops")
_SKMEM_SS = ("r", "rb", "t", "tb", "f", "w", "o", "bl", "d")  # how `ss -m` labels them

_NLMSGHDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2 with an all-zero inet_diag_sockid (48 bytes) after it.
_REQ_V2 = struct.Struct("=BBBxI48x")
# struct inet_diag_msg (72 bytes): family, state, timer, retrans, then the sockid (sport,
# dport, src[16], dst[16] in network order, if, cookie[2]), then expires, rqueue, wqueue,
# uid, inode in host order. Unpacked in two parts: what ranking needs, and the 4-tuple.
_DIAG_MSG_SIZE = 72
_DIAG_RANKING = struct.Struct("=BB54xIIII")
_DIAG_SOCKID = struct.Struct(">HH16s16s")
_RTATTR = struct.Struct("=HH")
# The skmem array by length; sk_forward_alloc (the fifth) is a signed int, the rest u32.
_SKMEM_ARRAYS = [struct.Struct("=" + "".join("i" if i == 4 else "I" for i in range(n)))
                 for n in range(len(SKMEM_FIELDS) + 1)]

# A dump skb is at most 32 KiB (netlink_recvmsg caps max_recvmsg_len); twice that never
# truncates, and MSG_TRUNC is checked anyway.
_RECV_BUFFER = 65536
# Per recv: a dump hands out one skb at a time, so silence this long means a stuck kernel.
NETLINK_TIMEOUT_S = 2.0
# How long the /proc/*/fd scan may take. procfs costs ~2 us per fd listed and ~2.5 us per
# readlink, so 100 ms covers ~20k fds: enough on most hosts, and bounded on the others.
FD_SCAN_BUDGET_S = 0.1


def _align4(n: int) -> int:
    return (n + 3) & ~3


Endpoints = Tuple[bytes, int, bytes, int]   # source address, port, peer address, port


class Sock:
    """One TCP socket as the kernel reports it (before the process lookup).

    A snapshot ranks every socket of the namespace but shows only a few, so the figures the
    ranking needs are decoded at once and the rest (addresses, the skmem dict) when asked
    for: on a host with 100k sockets that is most of the cost of a snapshot.
    """

    __slots__ = ("af", "state", "rx_queue", "tx_queue", "uid", "inode", "mem", "skmem_values",
                 "accept_queue", "accept_backlog", "_endpoints")

    def __init__(self, af: int, state: int, rqueue: int, wqueue: int, uid: int, inode: int,
                 endpoints, skmem_values: Optional[Sequence[int]] = None,
                 listen_backlog: Optional[int] = None):
        """`endpoints` is an Endpoints tuple, or (decoder, *args) to make one when needed."""
        self.af = af
        self.state = state
        self.uid = uid
        self.inode = inode
        self.skmem_values = skmem_values
        self._endpoints = endpoints
        if state == TCP_LISTEN:
            # For a listener both diag and /proc put the accept-queue length in the receive
            # queue (and diag the backlog limit in the send queue): connections, not bytes.
            self.rx_queue = self.tx_queue = 0
            self.accept_queue: Optional[int] = rqueue
            self.accept_backlog: Optional[int] = listen_backlog
        else:
            self.rx_queue = rqueue    # rcv_nxt - copied_seq: received, not yet read
            self.tx_queue = wqueue    # write_seq - snd_una: written, not yet acknowledged
            self.accept_queue = self.accept_backlog = None
        # Bytes charged against tcp_mem, or the queued payload when skmem is unknown. A
        # socket's share of memory_allocated is what it has charged (skb truesize in the
        # receive and out-of-order queues = rmem_alloc, in the write and retransmit queues =
        # wmem_queued) plus the forward allocation it reserved ahead (fwd_alloc). wmem_alloc
        # is left out: it counts clones of write-queue skbs still in the qdisc or driver,
        # already inside wmem_queued.
        if skmem_values is not None and len(skmem_values) > 5:
            self.mem = skmem_values[0] + skmem_values[5] + max(skmem_values[4], 0)
        else:
            self.mem = self.rx_queue + self.tx_queue

    @property
    def skmem(self) -> Optional[Dict[str, int]]:
        if self.skmem_values is None:
            return None
        return dict(zip(SKMEM_FIELDS, self.skmem_values))

    @property
    def endpoints(self) -> Endpoints:
        where = self._endpoints
        if callable(where[0]):
            where = self._endpoints = where[0](*where[1:])
        return where

    @property
    def local(self) -> str:
        src, sport, _dst, _dport = self.endpoints
        return _endpoint(self.af, src, sport)

    @property
    def remote(self) -> str:
        _src, _sport, dst, dport = self.endpoints
        return _endpoint(self.af, dst, dport)

    def __repr__(self) -> str:
        return (f"Sock({TCP_STATES.get(self.state, self.state)} {self.local} -> {self.remote} "
                f"rx={self.rx_queue} tx={self.tx_queue} mem={self.mem} inode={self.inode})")


def _endpoint(af: int, addr: bytes, port: int) -> str:
    if af == 4:
        return f"{socket.inet_ntop(socket.AF_INET, addr[:4])}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, addr[:16])}]:{port}"


# ---------------------------------------------------------------------------------------
# sock_diag

def diag_request(family: int, seq: int, states: int = DUMP_STATES) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request for every TCP socket of `family` in `states`."""
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_SKMEMINFO - 1), states)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class DiagReply(NamedTuple):
    """What one recv of a dump held."""
    sockets: List[Sock]
    done: bool           # NLMSG_DONE or NLMSG_ERROR seen: the dump is over
    error: int           # errno from NLMSG_ERROR or a failed NLMSG_DONE, else 0
    interrupted: bool    # NLM_F_DUMP_INTR: sockets came and went during the dump
    truncated: bool      # a message ran past the end of the data


def parse_diag_reply(data, seq: Optional[int] = None) -> DiagReply:
    """Decode the netlink messages in one datagram of a sock_diag dump.

    Messages of another sequence number (a stale dump on the same socket) are skipped;
    a message cut short ends the parse, keeping what came before it.
    """
    sockets: List[Sock] = []
    done = interrupted = truncated = False
    error = 0
    end = len(data)
    off = 0
    while off + _NLMSGHDR.size <= end:
        length, mtype, flags, mseq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > end:
            truncated = True
            break
        body = off + _NLMSGHDR.size
        if flags & NLM_F_DUMP_INTR:
            interrupted = True
        if seq is None or mseq == seq:
            if mtype == SOCK_DIAG_BY_FAMILY:
                sock = decode_diag_msg(data, body, off + length)
                if sock is None:
                    truncated = True
                else:
                    sockets.append(sock)
            elif mtype in (NLMSG_DONE, NLMSG_ERROR):
                # Both carry an int: 0, or a negative errno (a dump can fail half-way and
                # say so in NLMSG_DONE).
                if off + length >= body + 4:
                    error = -struct.unpack_from("=i", data, body)[0]
                done = True
                break
        off += _align4(length)
    else:
        if off < end:
            truncated = True
    return DiagReply(sockets, done, max(error, 0), interrupted, truncated)


def decode_diag_msg(data, start: int, end: int) -> Optional[Sock]:
    """A struct inet_diag_msg and its attributes in data[start:end]; None if cut short.

    `data` must outlive the Sock (its addresses are read from it later): bytes, not a
    reused receive buffer.
    """
    if end - start < _DIAG_MSG_SIZE:
        return None
    family, state, rqueue, wqueue, uid, inode = _DIAG_RANKING.unpack_from(data, start)
    skmem_values = None
    pos = start + _DIAG_MSG_SIZE
    while pos + 4 <= end:
        rta_len, rta_type = _RTATTR.unpack_from(data, pos)
        if rta_len < 4 or pos + rta_len > end:
            break
        if rta_type == INET_DIAG_SKMEMINFO:
            count = min((rta_len - 4) >> 2, len(SKMEM_FIELDS))
            skmem_values = _SKMEM_ARRAYS[count].unpack_from(data, pos + 4)
            break   # nothing after it is needed
        pos += (rta_len + 3) & ~3
    return Sock(4 if family == socket.AF_INET else 6, state, rqueue, wqueue, uid, inode,
                (_diag_endpoints, data, start), skmem_values, wqueue)


def _diag_endpoints(data, start: int) -> Endpoints:
    sport, dport, src, dst = _DIAG_SOCKID.unpack_from(data, start + 4)
    return src, sport, dst, dport


def _netlink_sockets() -> Tuple[List[Sock], bool]:
    """Every TCP socket of the calling thread's namespace, and whether the dump was whole.

    Raises OSError when sock_diag cannot answer at all, so the caller falls back to /proc.
    """
    sockets: List[Sock] = []
    complete = True
    # A netlink socket dumps the namespace it was created in: the calling thread's.
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(NETLINK_TIMEOUT_S)
        # One dump per family: an AF_INET6 dump holds only sk_family == AF_INET6 sockets
        # (v4-mapped ones included), so the two never overlap.
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            nl.sendto(diag_request(family, seq), (0, 0))
            received = 0
            while True:
                try:
                    # a fresh bytes per datagram: the Socks read their addresses from it later
                    data, _anc, msg_flags, _addr = nl.recvmsg(_RECV_BUFFER)
                except socket.timeout:
                    if not sockets and family == socket.AF_INET:
                        raise
                    return sockets, False
                reply = parse_diag_reply(data, seq)
                sockets.extend(reply.sockets)
                received += len(reply.sockets)
                if msg_flags & socket.MSG_TRUNC or reply.truncated or reply.interrupted:
                    complete = False
                if reply.error:
                    # ENOENT here means no tcp_diag handler (module missing): nothing to
                    # salvage from the first family, /proc will do better.
                    if family == socket.AF_INET and not received:
                        raise OSError(reply.error, f"sock_diag: {os.strerror(reply.error)}")
                    complete = False
                if reply.done:
                    break
    return sockets, complete


# ---------------------------------------------------------------------------------------
# /proc/net/tcp, tcp6

def _proc_address(hexaddr: str, byteorder: str) -> bytes:
    # The kernel prints the address as %08X of each 32-bit word in host order, so on a
    # little-endian machine 127.0.0.1 reads "0100007F".
    return b"".join(int(hexaddr[i:i + 8], 16).to_bytes(4, byteorder)
                    for i in range(0, len(hexaddr), 8))


def _proc_endpoints(local: str, remote: str, byteorder: str) -> Endpoints:
    src, _, sport = local.partition(":")
    dst, _, dport = remote.partition(":")
    return (_proc_address(src, byteorder), int(sport, 16),
            _proc_address(dst, byteorder), int(dport, 16))


def parse_proc_net_tcp(text: str, af: int, byteorder: str = sys.byteorder) -> List[Sock]:
    """Sockets from /proc/net/tcp (af 4) or tcp6 (af 6), without TIME_WAIT entries.

    Lines that do not parse (the header, a line torn by a concurrent change) are skipped.
    """
    sockets: List[Sock] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            state = int(fields[3], 16)
            if state == TCP_TIME_WAIT:
                continue
            tx_hex, _, rx_hex = fields[4].partition(":")
            local, remote = fields[1], fields[2]
            if len(local) < 13 or len(remote) < 13 or local[-5] != ":" or remote[-5] != ":":
                continue    # torn: the addresses are decoded only for the top sockets
            sockets.append(Sock(af, state, int(rx_hex, 16), int(tx_hex, 16), int(fields[7]),
                                int(fields[9]), (_proc_endpoints, local, remote, byteorder)))
        except ValueError:
            continue
    return sockets


def _proc_sockets() -> Tuple[List[Sock], bool]:
    sockets: List[Sock] = []
    complete = True
    # thread-self: a helper thread inside another namespace must see that namespace's files.
    for name, af in (("tcp", 4), ("tcp6", 6)):
        try:
            with open(f"/proc/thread-self/net/{name}") as fh:
                sockets.extend(parse_proc_net_tcp(fh.read(), af))
        except FileNotFoundError:
            continue    # tcp6 is absent when IPv6 is disabled
        except OSError:
            complete = False
    return sockets, complete


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


# ---------------------------------------------------------------------------------------
# socket inode -> processes

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


# ---------------------------------------------------------------------------------------
# snapshot

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


# ---------------------------------------------------------------------------------------
# terminal lines

_SS_STATE = {
    "ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECV": "SYN-RECV",
    "FIN_WAIT1": "FIN-WAIT-1", "FIN_WAIT2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT",
    "CLOSE": "UNCONN", "CLOSE_WAIT": "CLOSE-WAIT", "LAST_ACK": "LAST-ACK", "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _process(entry: dict) -> str:
    owner = entry.get("owner")
    if entry.get("pids"):
        comm = entry.get("comm") or "?"
        where = f" [{entry['container']}]" if entry.get("container") else ""
        return "users:(" + ",".join(f'("{comm}",pid={p})' for p in entry["pids"]) + ")" + where
    return {"orphan": "orphan", "unaccepted": "in accept queue"}.get(owner, "-")


def format_holders(snap: dict, limit: int = 10) -> List[str]:
    """`ss -tmp`-like lines: a summary, a header, then one line per socket (plus its skmem)."""
    rows = snap.get("top", [])[:max(limit, 0)]
    lines = [f"{snap.get('sockets_total', 0)} TCP sockets in netns {snap.get('netns')}: "
             f"{_size(snap.get('mem_bytes_total', 0))} held, "
             f"{_size(snap.get('rx_bytes_total', 0))} unread, "
             f"{_size(snap.get('tx_bytes_total', 0))} unacknowledged"
             + ("" if snap.get("owners_complete", True) else " (process scan cut short)")]
    if not rows:
        return lines
    table = [("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Process")]
    for e in rows:
        state = _SS_STATE.get(e.get("state"), e.get("state"))
        rx, tx = e.get("rx_queue", 0), e.get("tx_queue", 0)
        if e.get("accept_queue") is not None:
            rx, tx = e["accept_queue"], e.get("accept_backlog") or 0   # as ss shows listeners
        remote = e.get("remote", "")
        if remote.endswith(":0"):
            remote = remote[:-1] + "*"     # no peer yet: ss prints the port as *
        table.append((state, str(rx), str(tx), e.get("local", ""), remote, _process(e)))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row, e in zip(table, [None] + rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
                     f"{row[3]:<{widths[3]}}  {row[4]:<{widths[4]}}  {row[5]}".rstrip())
        if e is not None and e.get("skmem"):
            skmem = e["skmem"]
            figures = ",".join(f"{label}{skmem[name]}"
                               for name, label in zip(SKMEM_FIELDS, _SKMEM_SS) if name in skmem)
            lines.append(f"\t skmem:({figures})")
    for m in snap.get("memcgs") or []:
        if m.get("limit"):
            pct = f" ({m['sock'] * 100 // m['limit']}% of {m['limit_name']} {_size(m['limit'])})" \
                if m.get("version") == "v1" and m.get("sock") is not None else f" ({m['limit_name']} {_size(m['limit'])})"
            lines.append(f"memory cgroup {m['path']}: sockets {_size(m.get('sock') or 0)}{pct}"
                         + (f", {m['failcnt']} charges refused" if m.get("failcnt") else ""))
    return lines


__all__ = [
    "Sock", "DiagReply", "Owners", "snapshot", "format_holders", "find_owners",
    "diag_request", "parse_diag_reply", "decode_diag_msg", "parse_proc_net_tcp",
    "FD_SCAN_BUDGET_S", "SKMEM_FIELDS", "TCP_STATES",
]
