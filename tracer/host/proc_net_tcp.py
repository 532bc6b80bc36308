"""/proc/net/tcp and tcp6: the queue lengths of every TCP socket, without
skmem. The fallback when sock_diag cannot answer (a kernel without
inet_diag/tcp_diag, a sandbox that forbids netlink)."""
from __future__ import annotations

import sys
from typing import List, Tuple

from .tcp_sock import TCP_TIME_WAIT, Endpoints, Sock

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


def tcp_sockets() -> Tuple[List[Sock], bool]:
    """Every TCP socket of the calling thread's namespace, and whether every file was read."""
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
