"""Single connections that end in each way a close can leave FIN_WAIT1/FIN_WAIT2/CLOSING.

The TIME_WAIT overflow of the tracepoint tier is inferred at the transition to TCP_CLOSE,
so every way of getting there with our FIN acked and no error is an adversary of the
inference (net/ipv4/tcp.c and tcp_input.c, 4.19 to 6.18):

- genuine: the client closes first, the peer's ACK/FIN arrives, tcp_time_wait() asks for a
  bucket; with the table full it gets none (TCPTimeWaitOverflow).
- linger0: shutdown(SHUT_WR), FIN acked (FIN_WAIT2), then close() with SO_LINGER {1, 0}:
  tcp_disconnect() sets TCP_CLOSE first and sends its reset after (TCPAbortOnData).
- unspec: shutdown(SHUT_WR), FIN_WAIT2, then connect(AF_UNSPEC): tcp_disconnect() again,
  and the same socket object is connected anew and closed for real (a genuine overflow on
  the very address of the earlier abort).
- linger2: TCP_LINGER2 -1 and close(): the ACK of our FIN makes FIN_WAIT2 and the
  FIN_WAIT1 branch of tcp_rcv_state_process calls tcp_done() before its caller sends the
  reset (TCPAbortOnData).
- late_data: the peer writes after our close: the segment that acks our FIN carries data,
  the same FIN_WAIT1 branch aborts; if the peer's delayed ACK won the race, the orphan goes
  FIN_WAIT2 -> tcp_time_wait() instead (an overflow). Either is fine: the counters decide.

Each move takes a listener and returns its name; every call is bounded by timeouts.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import time
from typing import Callable, Dict, Optional, Tuple

from . import sockets

TCP_FIN_WAIT2 = 5
TCP_LINGER2 = getattr(socket, "TCP_LINGER2", 8)
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)
STATE_TIMEOUT_S = 1.0

_libc = None


def listener(family: int = socket.AF_INET, addr: str = sockets.SERVER_ADDR, port: int = 0,
             backlog: int = 64) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(backlog)
        sock.settimeout(sockets.CONNECT_TIMEOUT_S)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect(server: socket.socket, client: Optional[socket.socket] = None,
             bind: Optional[Tuple[str, int]] = None) -> Tuple[socket.socket, socket.socket]:
    if client is None:
        client = socket.socket(server.family, socket.SOCK_STREAM)
        if bind is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            client.bind(bind)
    try:
        client.settimeout(sockets.CONNECT_TIMEOUT_S)
        client.connect(server.getsockname()[:2])
        accepted, _ = server.accept()
    except BaseException:
        client.close()
        raise
    accepted.settimeout(sockets.CONNECT_TIMEOUT_S)
    return client, accepted


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _half_close_to_fin_wait2(client: socket.socket, accepted: socket.socket) -> None:
    """shutdown(SHUT_WR) and wait until the peer acked our FIN (FIN_WAIT2).

    The peer enters CLOSE_WAIT in pingpong mode, so its ACK is delayed (up to ~40 ms);
    TCP_QUICKACK on it sends the pending ACK at once."""
    client.shutdown(socket.SHUT_WR)
    if accepted.recv(1) != b"":
        raise RuntimeError("expected the client's FIN")
    accepted.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
    if not sockets.wait_until(lambda: tcp_state(client) == TCP_FIN_WAIT2, STATE_TIMEOUT_S, 0.001):
        raise RuntimeError(f"client stuck in TCP state {tcp_state(client)}, not FIN_WAIT2")


def _close_genuinely(client: socket.socket, accepted: socket.socket) -> None:
    client.close()
    accepted.recv(1)      # b"" once the FIN arrived
    accepted.close()


def genuine(server: socket.socket, bind: Optional[Tuple[str, int]] = None) -> str:
    client, accepted = _connect(server, bind=bind)
    try:
        _close_genuinely(client, accepted)
    finally:
        sockets.close_all([client, accepted])
    return "genuine"


def linger0(server: socket.socket) -> str:
    client, accepted = _connect(server)
    try:
        _half_close_to_fin_wait2(client, accepted)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
    finally:
        sockets.close_all([client, accepted])
    return "linger0"


def _connect_unspec(sock: socket.socket) -> None:
    """connect(fd, {AF_UNSPEC}) : the kernel's way to disconnect a TCP socket."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    addr = (ctypes.c_ubyte * 28)()      # sa_family 0 (AF_UNSPEC), room for a sockaddr_in6
    if _libc.connect(sock.fileno(), addr, ctypes.sizeof(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"connect(AF_UNSPEC): {ctypes.cast(_libc.strerror(err), ctypes.c_char_p).value}")


def unspec(server: socket.socket) -> str:
    """Disconnect from FIN_WAIT2, then reuse the same socket for a genuine close."""
    client, accepted = _connect(server)
    try:
        _half_close_to_fin_wait2(client, accepted)
        _connect_unspec(client)
        accepted.close()
        client, accepted = _connect(server, client=client)
        _close_genuinely(client, accepted)
    finally:
        sockets.close_all([client, accepted])
    return "unspec"


def linger2(server: socket.socket) -> str:
    client, accepted = _connect(server)
    try:
        client.setsockopt(socket.IPPROTO_TCP, TCP_LINGER2, -1)
        _close_genuinely(client, accepted)
    finally:
        sockets.close_all([client, accepted])
    return "linger2"


def late_data(server: socket.socket) -> str:
    client, accepted = _connect(server)
    try:
        client.close()
        accepted.recv(1)
        try:
            accepted.send(b"late")
        except OSError:
            pass
        accepted.close()
    finally:
        sockets.close_all([client, accepted])
    return "late_data"


MOVES: Dict[str, Callable[[socket.socket], str]] = {
    "genuine": genuine, "linger0": linger0, "unspec": unspec, "linger2": linger2,
    "late_data": late_data,
}
# moves that end in exactly one overflow when the table is full (unspec: its reuse)
OVERFLOWS_ONE = ("genuine", "unspec")
# moves whose outcome is a race the kernel settles (an overflow or an abort)
OVERFLOWS_MAYBE = ("late_data",)


def run_moves(pattern, count: int, deadline_s: float) -> Dict[str, int]:
    """count moves cycling through `pattern`, a list of (name in MOVES, listener):
    how many of each were made."""
    done: Dict[str, int] = {}
    deadline = time.monotonic() + deadline_s
    for i in range(count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {i} of {count} connections in {deadline_s:.0f} s")
        name, server = pattern[i % len(pattern)]
        MOVES[name](server)
        done[name] = done.get(name, 0) + 1
    return done


def expected_overflows(done: Dict[str, int]) -> Tuple[int, int]:
    """(minimum, maximum) TIME_WAIT overflows for moves made with the table full."""
    low = sum(done.get(m, 0) for m in OVERFLOWS_ONE)
    return low, low + sum(done.get(m, 0) for m in OVERFLOWS_MAYBE)
