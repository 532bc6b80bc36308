"""A sock_diag client (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY): what `ss` uses.
It dumps every TCP socket of the calling thread's namespace with the kernel's
own memory figures per socket (skmem)."""
from __future__ import annotations

import os
import socket
import struct
from typing import List, NamedTuple, Optional, Tuple

from .tcp_sock import SKMEM_FIELDS, TCP_TIME_WAIT, Endpoints, Sock

# Values from include/uapi/linux/{netlink,sock_diag,inet_diag}.h.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300              # NLM_F_ROOT | NLM_F_MATCH
NLM_F_DUMP_INTR = 0x10          # the hash tables changed while the dump walked them
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_SKMEMINFO = 7

# Every state but TIME_WAIT, NEW_SYN_RECV and BOUND_INACTIVE: time-wait buckets and pending
# connection requests are mini-sockets without queues (nothing charged to tcp_mem), and
# there can be hundreds of thousands of them on the hosts where a snapshot matters.
DUMP_STATES = sum(1 << s for s in range(1, 12) if s != TCP_TIME_WAIT)

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


def _align4(n: int) -> int:
    return (n + 3) & ~3


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


def tcp_sockets() -> Tuple[List[Sock], bool]:
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
