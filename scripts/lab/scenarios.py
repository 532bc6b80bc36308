"""The list of scenarios.

A scenario function takes the run's Context and a connection count, does its work in the
lab's namespace, waits (bounded) until the kernel has acted, and returns what the counters
should show. The Lab restores every sysctl after the run; scenarios restore host-wide ones
themselves as soon as they can, so they stay changed for as short a time as possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from .context import Context, Expected
from .memcg_tcp_mem import MEMCG_LIMIT, memcg_beside_tcp_mem
from .rcv_drops import rcvbuf_drops
from .orphans import orphans_close, orphans_timer, orphans_timer_backoff
from .tcp_mem import TCP_MEM_CAP_S, TINY_TCP_MEM, orphans_tcp_mem, tcp_mem_recv, tcp_mem_send
from .time_wait import TW_BUCKETS, tw_overflow
from .tw_adversarial import tw_ipv6, tw_late_data, tw_linger0, tw_two_cpus, tw_two_netns


def _drops_expected(expected: Expected) -> Expected:
    # tcp_mem_recv's workload: its refusals drop segments too
    return {**expected, "TCPRcvQDrop": (1, None)}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    needs_global_sysctls: bool
    default_count: int
    run: Callable[[Context, int], Expected]


_TINY = f"tcp_mem '{TINY_TCP_MEM}' for under {TCP_MEM_CAP_S:.0f} s"

SCENARIOS: Dict[str, Scenario] = {s.name: s for s in (
    Scenario("tw_overflow",
             f"TIME_WAIT bucket overflow: tcp_max_tw_buckets={TW_BUCKETS} in the lab "
             f"namespace, connections closed by the client",
             False, 300, tw_overflow),
    Scenario("tw_linger0",
             f"TIME_WAIT table full ({TW_BUCKETS} buckets): overflows mixed with SO_LINGER "
             f"{{1,0}} aborts and connect(AF_UNSPEC) from FIN_WAIT2, the socket then reused",
             False, 60, tw_linger0),
    Scenario("tw_late_data",
             "TIME_WAIT table full: overflows mixed with FIN_WAIT1 aborts (TCP_LINGER2 -1, "
             "data arriving after close)",
             False, 60, tw_late_data),
    Scenario("tw_ipv6",
             "TIME_WAIT table full: IPv6 overflows, linger-0 and linger2 aborts and "
             "disconnects, with IPv4 neighbours",
             False, 60, tw_ipv6),
    Scenario("tw_two_netns",
             "TIME_WAIT table full here while a second namespace makes the same 4-tuples "
             "into TIME_WAIT sockets at the same time",
             False, 60, tw_two_netns),
    Scenario("tw_two_cpus",
             "TIME_WAIT table full: two processes pinned to two CPUs mix overflows with "
             "aborts, disconnects and reuses",
             False, 80, tw_two_cpus),
    Scenario("orphans_close",
             "orphans aborted on close: tcp_max_orphans=0, clients close with data unsent",
             True, 300, orphans_close),
    Scenario("orphans_timer",
             "orphans aborted by the retransmission timer: N orphans within "
             "tcp_max_orphans=N, doubled (shift 1) by sk_err_soft from a cut route",
             True, 300, orphans_timer),
    Scenario("orphans_timer_backoff",
             "orphans aborted by the third retransmission timer, RTO backed off twice but "
             "below rto_max: shift 1, exact (needs net.ipv4.tcp_rto_max_ms, 6.18+)",
             True, 100, orphans_timer_backoff),
    Scenario("tcp_mem_send",
             f"send side over the hard limit: {_TINY}, clients push 1 MiB each to "
             f"servers that do not read",
             True, 50, tcp_mem_send),
    Scenario("tcp_mem_recv",
             f"receive side over the hard limit: slow readers hold full queues, {_TINY}",
             True, 50, tcp_mem_recv),
    Scenario("rcvbuf_drops",
             "received segments dropped for memory: readers that stop, then shrink SO_RCVBUF "
             "below what they hold, while their peers keep sending (PROTO_MEM, TCPRcvQDrop)",
             False, 20, rcvbuf_drops),
    Scenario("tcp_mem_drops",
             f"received segments dropped for memory at the hard limit: slow readers hold "
             f"full queues, {_TINY} (PROTO_MEM, TCPRcvQDrop/TCPOFODrop)",
             True, 50, lambda ctx, count: _drops_expected(tcp_mem_recv(ctx, count))),
    Scenario("orphans_tcp_mem",
             f"orphans aborted for memory, not number: clients close with data queued, "
             f"{_TINY}",
             True, 50, orphans_tcp_mem),
    Scenario("memcg_beside_tcp_mem",
             f"memory-cgroup refusals beside hard-limit ones: a reader in a v1 memcg with "
             f"memory.kmem.tcp.limit_in_bytes={MEMCG_LIMIT >> 20} MiB holds unread "
             f"connections while tcp_mem_send runs ({_TINY})",
             True, 50, memcg_beside_tcp_mem),
)}
