"""Received segments dropped for memory (the mem_drop family), inside the lab's namespace.

A receiver that stops reading and then shrinks its SO_RCVBUF below what it already holds:
the window it advertised before stays open (the kernel does not shrink an advertised
window), so the sender keeps sending, and each new in-order segment finds rmem_alloc above
sk_rcvbuf. tcp_try_rmem_schedule() prunes (PruneCalled, collapsing cannot bring a full
queue under a 4 KiB buffer: RcvPruned) and fails, and tcp_data_queue() drops the segment
with SKB_DROP_REASON_PROTO_MEM and TCPRcvQDrop +1 (5.19-6.18: the queue is not empty).
The receiver then advertises a zero window (ICSK_ACK_NOMEM): on 6.18 one drop per
connection; the 6.1 guest drops some retransmissions too, out of order (TCPOFODrop).
Nothing host-wide changes: rcvbuf is the socket's own.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios

from . import sockets
from .context import Context, Expected

KiB = 1 << 10
FILL_BYTES = 64 * KiB        # queued at a 1 MiB buffer before it shrinks
SHRUNK_RCVBUF = 4 * KiB      # the kernel doubles it: 8 KiB, far below the queue
PUSH_S = 0.5


def rcvbuf_drops(ctx: Context, count: int) -> Expected:
    server, pairs = ctx.inside(lambda: sockets.open_pairs(count, rcvbuf=1 << 20))
    clients = [client for client, _ in pairs]
    try:
        for client in clients:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        filled = [sockets.send_until_full(client, FILL_BYTES) for client in clients]
        ctx.details["bytes_queued_before"] = [min(filled), max(filled)]
        # the segments reach the receive queues before they shrink
        sockets.wait_until(lambda: all(_queued(a) >= FILL_BYTES for _, a in pairs), timeout_s=2.0)
        for _, accepted in pairs:
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SHRUNK_RCVBUF)
        before = ctx.counters()["TCPRcvQDrop"]
        sent = sockets.send_for(clients, 1 << 20, PUSH_S)
        ctx.details["bytes_offered_after"] = [min(sent), max(sent)]
        sockets.wait_until(lambda: ctx.counters()["TCPRcvQDrop"] - before >= count, timeout_s=2.0)
    finally:
        sockets.close_all(pairs)
        server.close()
    # 6.1 drops some retransmissions out of order as well (TCPOFODrop); 6.18 none
    return {"TCPRcvQDrop": (count, None), "RcvPruned": (1, None)}


def _queued(sock: socket.socket) -> int:
    """FIONREAD: bytes in the receive queue."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
