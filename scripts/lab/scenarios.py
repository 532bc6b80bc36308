"""The scenarios: each reproduces one kernel condition, for real, in the lab's namespace.

A scenario function takes the run's Context and a connection count, does its work, waits
(bounded) until the kernel has acted, and returns what the counters should show. It leaves
the restoring of sysctls to the Lab, but restores host-wide ones itself as soon as it can,
so they stay changed for as short a time as possible.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Callable, Dict

from . import sockets
from .context import Context, Expected, LabError

MiB = 1 << 20
# tcp_orphan_cache is refreshed every 100 ms (TCP_ORPHAN_TIMER_PERIOD): wait for 2 refreshes.
ORPHAN_CACHE_WAIT_S = 0.25
ORPHAN_SNDBUF = 128 * 1024  # the kernel doubles it (bookkeeping overhead)


# ---------------------------------------------------------------------------------------
# TIME_WAIT bucket overflow

TW_BUCKETS = 5


def tw_overflow(ctx: Context, count: int) -> Expected:
    # tcp_max_tw_buckets is per namespace since 4.11, so this changes nothing host-wide.
    ctx.set_sysctl("net.ipv4.tcp_max_tw_buckets", TW_BUCKETS)
    # TIME_WAIT sockets left by an earlier run in this namespace (they live 60 s) still
    # hold buckets.
    free_buckets = max(0, TW_BUCKETS - ctx.sockstat_tcp().get("tw", 0))

    def workload() -> None:
        server = sockets.listener(backlog=16)
        try:
            for _ in range(count):
                client, accepted = sockets.connect_pair(server)
                try:
                    # The client closes first, so it is the side that goes through
                    # FIN_WAIT2 to TIME_WAIT. An orphan in FIN_WAIT2 asks for its bucket as
                    # soon as its FIN is acked (tcp_rcv_state_process -> tcp_time_wait), and
                    # without one it is simply closed: TCPTimeWaitOverflow, no log line.
                    client.close()
                    accepted.recv(1)  # b"" once the FIN arrived: the order is settled
                finally:
                    sockets.close_all([client, accepted])
        finally:
            server.close()

    ctx.inside(workload)
    overflows = count - min(free_buckets, count)
    ctx.details["free_tw_buckets_before"] = free_buckets
    ctx.details["tw_after"] = ctx.sockstat_tcp().get("tw")
    return {"TCPTimeWaitOverflow": (overflows, overflows)}


# ---------------------------------------------------------------------------------------
# Orphans aborted on the close path

def _blocked_senders(ctx: Context, count: int, send_bytes: int, sndbuf=None):
    """`count` connections whose client has data queued that the server will never read."""
    def setup():
        # A small receive buffer on a server that never reads closes the window fast,
        # so most of what the client sends stays in its own write queue.
        server = sockets.listener(backlog=count, rcvbuf=4096)
        try:
            pairs = sockets.connect_pairs(server, count, sndbuf=sndbuf)
        except BaseException:
            server.close()
            raise
        return server, pairs

    server, pairs = ctx.inside(setup)
    queued = [sockets.send_until_full(client, send_bytes) for client, _ in pairs]
    return server, pairs, queued


def _lingering_orphan(ctx: Context, server):
    """One extra connection that becomes an orphan the kernel will not kill soon.

    Closed with nothing unsent and TCP_LINGER2 at 120 s, the client sits in FIN_WAIT2 as a
    full orphaned socket (tcp_fin_time() > TCP_TIMEWAIT_LEN, so it is not turned into a
    TIME_WAIT socket yet), with no retransmission or probe timer that could call
    tcp_out_of_resources(). It is counted in the orphan sum until its peer closes.
    """
    client, accepted = ctx.inside(sockets.connect_pair, server)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_LINGER2, 120)
    client.close()
    return accepted


def _close_when_cache_hot(ctx: Context, clients) -> int:
    """Close every client; return how many were closed before the close path aborted one.

    The orphan cache's timer is deferrable: on an idle CPU it can run late, so the seed may
    not be in the cache yet. Until one close is aborted, close one client at a time and
    give the cache a moment; the orphans that slip through still die, on their timers.
    """
    for i, client in enumerate(clients):
        before = ctx.counters()["TCPAbortOnMemory"]
        client.close()
        if ctx.counters()["TCPAbortOnMemory"] > before:
            for rest in clients[i + 1:]:
                rest.close()
            return i
        time.sleep(0.02)
    return len(clients)


def orphans_close(ctx: Context, count: int) -> Expected:
    # Each client offers 4 MiB but may queue only its send buffer: autotuned on loopback,
    # that reaches ~2.8 MB a socket, ~0.8 GB for 300, enough to push a small host into
    # tcp_mem pressure and blur what this scenario shows.
    server, pairs, queued = _blocked_senders(ctx, count, send_bytes=4 * MiB,
                                             sndbuf=ORPHAN_SNDBUF)
    ctx.details["bytes_queued_per_client"] = [min(queued), max(queued)]
    seed_peer = None
    try:
        # __tcp_close checks tcp_check_oom(sk, 0) for a socket closed with data unsent (it
        # stays in FIN_WAIT1). The orphan count compared there is not the live sum but a
        # cache refreshed every 100 ms (5.16+), and the close loop takes a few ms: with no
        # orphan already in the cache every close would pass, and the socket would be
        # killed a little later on its timer instead. One lingering orphan, made while
        # tcp_max_orphans still has its normal value, fills the cache first.
        seed_peer = _lingering_orphan(ctx, server)
        time.sleep(ORPHAN_CACHE_WAIT_S)
        start = ctx.counters()["TCPAbortOnMemory"]
        # tcp_max_orphans is host-wide; 0 makes any orphan one too many.
        ctx.set_global_sysctl("net.ipv4.tcp_max_orphans", 0)
        ctx.details["closed_before_cache_hot"] = _close_when_cache_hot(ctx, [c for c, _ in pairs])
        ctx.details["aborted_by_end_of_close_loop"] = ctx.counters()["TCPAbortOnMemory"] - start
        # Any that slipped through die on their next retransmission or probe timer.
        sockets.wait_until(
            lambda: ctx.counters()["TCPAbortOnMemory"] - start >= count, timeout_s=5.0)
    finally:
        ctx.sysctls.restore("net.ipv4.tcp_max_orphans")
        # The seed's peer closing sends the FIN that moves the seed on to TIME_WAIT.
        sockets.close_all(pairs + ([seed_peer] if seed_peer else []))
        server.close()
    return {"TCPAbortOnMemory": (count, count)}


# ---------------------------------------------------------------------------------------
# Registry

@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    needs_global_sysctls: bool
    default_count: int
    run: Callable[[Context, int], Expected]


SCENARIOS: Dict[str, Scenario] = {s.name: s for s in (
    Scenario("tw_overflow",
             "TIME_WAIT bucket overflow: tcp_max_tw_buckets=5 in the lab namespace, "
             "client-closed connections",
             False, 300, tw_overflow),
    Scenario("orphans_close",
             "orphans aborted on close: tcp_max_orphans=0, clients close with data unsent",
             True, 300, orphans_close),
)}
