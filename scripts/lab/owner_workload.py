"""Two processes for the owner scenarios: a slow reader and a fast sender, each in
its own cgroup (the parent moves them in before they open a socket).

    python3 -m scripts.lab.owner_workload reader  RCVBUF   -> prints its port
    python3 -m scripts.lab.owner_workload handoff RCVBUF CONNS -> as reader, then a child
                                                               reads once: the new owner
    python3 -m scripts.lab.owner_workload sender  PORT SECONDS CONNS [SNDBUF]
    python3 -m scripts.lab.owner_workload held    RCVBUF CONNS   (memcg_tcp_mem.py)

Both wait for one line on stdin ("go") before they start, and the reader then
waits for a second line before it exits: the parent decides when its sockets go.
On loopback a receive-side refusal runs in the softirq of the *sender's*
system call, so the context task of those events is the sender, and the owner
must be the reader.
"""
from __future__ import annotations

import socket
import sys
import time


def _accept_and_read(rcvbuf: int, conns: int, reads: int):
    """Listen (printing the port), accept `conns` connections and read `reads` single
    bytes from each (a process that reads, then stalls: a slow consumer); print
    "accepted". Returns the listener and the connections."""
    sys.stdin.readline()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
    srv.bind(("127.0.0.1", 0))
    srv.listen(conns)
    print(srv.getsockname()[1], flush=True)
    held = []
    for _ in range(conns):
        c, _ = srv.accept()
        c.settimeout(2.0)
        for _ in range(reads):
            try:
                c.recv(1)
            except OSError:
                pass
        held.append(c)
    print("accepted", flush=True)
    return srv, held


def reader(rcvbuf: int, conns: int) -> None:
    srv, held = _accept_and_read(rcvbuf, conns, 1)
    sys.stdin.readline()
    for c in held:
        c.close()
    srv.close()


def handoff(rcvbuf: int, conns: int) -> None:
    """As reader, then a forked child reads once from each connection and stalls in
    its turn: from then on the child is the owner (a pre-fork server's worker). It
    prints "handed PID" after its reads."""
    import os
    import signal
    # the parent's reads: noted, then the same owner
    srv, held = _accept_and_read(rcvbuf, conns, 3)
    child = os.fork()
    if child == 0:
        for c in held:
            try:
                c.recv(1)
            except OSError:
                pass
        print("handed", os.getpid(), flush=True)
        signal.pause()
        os._exit(0)
    sys.stdin.readline()
    os.kill(child, signal.SIGTERM)
    os.waitpid(child, 0)
    for c in held:
        c.close()
    srv.close()


def held(rcvbuf: int, conns: int) -> None:
    """Accept `conns` connections and hold them unread until told to close: the
    peers send only after "accepted", so accept charges nothing to the memcg."""
    sys.stdin.readline()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
    srv.bind(("127.0.0.1", 0))
    srv.listen(conns)
    srv.settimeout(8.0)
    print(srv.getsockname()[1], flush=True)
    kept = [srv.accept()[0] for _ in range(conns)]
    print("accepted", flush=True)
    sys.stdin.readline()
    for c in kept:
        c.close()      # data unread: a reset, not a FIN
    srv.close()


def sender(port: int, seconds: float, conns: int, sndbuf: int = 0) -> None:
    sys.stdin.readline()
    socks = []
    for _ in range(conns):
        s = socket.socket()
        if sndbuf:
            # a locked send buffer: the kernel does not shrink it after a refusal
            # (sk_stream_moderate_sndbuf), so every refused send below it is traced
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), sndbuf)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    payload = b"x" * 65536
    end = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < end:
        for s in socks:
            try:
                sent += s.send(payload)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass
        time.sleep(0.001)
    print(sent, flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "held":
        held(int(sys.argv[2]), int(sys.argv[3]))
    elif role == "handoff":
        handoff(int(sys.argv[2]), int(sys.argv[3]))
    elif role == "reader":
        reader(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    else:
        sender(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1,
               int(sys.argv[5]) if len(sys.argv) > 5 else 0)
