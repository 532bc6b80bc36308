"""One TCP socket as the kernel reports it to sock_diag or /proc/net/tcp: its
state, queues, the memory it has charged against tcp_mem (skmem) and its
4-tuple, decoded when asked for."""
from __future__ import annotations

import socket
from typing import Dict, Optional, Sequence, Tuple

TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV", 13: "BOUND_INACTIVE",
}
TCP_TIME_WAIT = 6
TCP_LISTEN = 10

# The order of the u32 array in INET_DIAG_SKMEMINFO (enum sk_meminfo; backlog came in 3.x,
# drops in 4.4: older kernels send a shorter array).
SKMEM_FIELDS = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc", "wmem_queued",
                "optmem", "backlog", "drops")


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
