"""Loopback connection pairs for the scenarios; every blocking call has a timeout.

These functions create sockets in the namespace of the calling thread, so the scenarios
call them from a thread inside the lab's namespace (tracer.host.netns.run_in_netns).
"""

from __future__ import annotations

import socket
import time
from typing import List, Optional, Tuple

SERVER_ADDR = "127.0.0.1"
# A second loopback address for the client side, so routing rules can tell the two
# directions apart (127.0.0.0/8 is all local once `lo` is up).
CLIENT_ADDR = "127.0.0.2"

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
CONNECT_TIMEOUT_S = 2.0   # one connect or accept (loopback: microseconds when healthy)
SETUP_TIMEOUT_S = 8.0     # all the connections of one scenario

Pair = Tuple[socket.socket, socket.socket]  # (client, server side of the accepted connection)


def listener(backlog: int, rcvbuf: Optional[int] = None, force: bool = False) -> socket.socket:
    """A listening socket on SERVER_ADDR, any port.

    The receive buffer is set on the listener because accepted sockets inherit it, and the
    window scale is chosen from it during the handshake, before accept() could change it.
    force uses SO_RCVBUFFORCE (root), which is not capped by net.core.rmem_max.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE if force else socket.SO_RCVBUF,
                            rcvbuf)
        sock.bind((SERVER_ADDR, 0))
        sock.listen(backlog)
        sock.settimeout(CONNECT_TIMEOUT_S)
    except BaseException:
        sock.close()
        raise
    return sock


def connect_pair(server: socket.socket, source: Optional[str] = None,
                 sndbuf: Optional[int] = None) -> Pair:
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.settimeout(CONNECT_TIMEOUT_S)
        if sndbuf is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if source is not None:
            client.bind((source, 0))
        client.connect(server.getsockname())
        accepted, _ = server.accept()
    except BaseException:
        client.close()
        raise
    accepted.settimeout(CONNECT_TIMEOUT_S)
    return client, accepted


def connect_pairs(server: socket.socket, count: int, source: Optional[str] = None,
                  sndbuf: Optional[int] = None) -> List[Pair]:
    pairs: List[Pair] = []
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(pairs)} of {count} connections "
                                   f"in {SETUP_TIMEOUT_S:.0f} s")
            pairs.append(connect_pair(server, source, sndbuf))
    except BaseException:
        close_all(pairs)
        raise
    return pairs


def open_pairs(count: int, source: Optional[str] = None, sndbuf: Optional[int] = None,
               rcvbuf: Optional[int] = None, force_rcvbuf: bool = False):
    """A listener and `count` connections to it: (server, [(client, accepted), ...])."""
    server = listener(backlog=count, rcvbuf=rcvbuf, force=force_rcvbuf)
    try:
        return server, connect_pairs(server, count, source, sndbuf)
    except BaseException:
        server.close()
        raise


def send_until_full(sock: socket.socket, total: int, chunk: int = 65536) -> int:
    """Queue up to `total` bytes without blocking; stop at the first refusal (EAGAIN).

    EAGAIN means the socket's send buffer is full or, under tcp_mem limits, that the kernel
    refused to charge more memory to it (sk_stream_wait_memory would otherwise sleep).
    """
    payload = b"x" * chunk
    sent = 0
    sock.setblocking(False)
    while sent < total:
        try:
            n = sock.send(payload[: min(chunk, total - sent)])
        except (BlockingIOError, InterruptedError):
            break
        if n <= 0:
            break
        sent += n
    return sent


def send_for(socks: List[socket.socket], total_each: int, seconds: float,
             pause_s: float = 0.01, chunk: int = 65536) -> List[int]:
    """Keep offering data to every socket for `seconds`, or until each has sent total_each."""
    sent = [0] * len(socks)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i, sock in enumerate(socks):
            if sent[i] < total_each:
                sent[i] += send_until_full(sock, total_each - sent[i], chunk)
        if all(s >= total_each for s in sent):
            break
        time.sleep(pause_s)
    return sent


def close_all(items) -> None:
    """Close sockets or (client, server) pairs, ignoring errors."""
    for item in items:
        for sock in item if isinstance(item, tuple) else (item,):
            try:
                sock.close()
            except OSError:
                pass


def wait_until(predicate, timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll predicate() until it is true or timeout_s passes; return its last verdict."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
