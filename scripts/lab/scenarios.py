"""The scenarios: each reproduces one kernel condition, for real, in the lab's namespace.

A scenario function takes the run's Context and a connection count, does its work, waits
(bounded) until the kernel has acted, and returns what the counters should show. It leaves
the restoring of sysctls to the Lab, but restores host-wide ones itself as soon as it can,
so they stay changed for as short a time as possible.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Callable, Dict

from tracer import procfs

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
# Orphans aborted on the timer path, with the shift penalty

@contextlib.contextmanager
def _routing_rules_first(ctx: Context):
    """Let policy rules act on loopback traffic: move the `local` table lookup after them.

    Rule 0 (lookup local) matches 127.0.0.0/8 before any other rule is consulted, so a
    rule meant to cut one loopback direction must come first. Put back on leaving.
    """
    ctx.ip("rule", "add", "pref", "100", "lookup", "local")
    ctx.ip("rule", "del", "pref", "0")
    try:
        yield
    finally:
        ctx.ip("rule", "add", "pref", "0", "lookup", "local")
        ctx.ip("rule", "del", "pref", "100")


def _cut(ctx: Context, source: str, destination: str, pref: int) -> None:
    # Adding a rule bumps the route generation id, so every cached dst becomes stale and
    # the next transmission looks its route up again, and fails.
    ctx.ip("rule", "add", "from", source, "to", destination, "unreachable", "pref", str(pref))


def _uncut(ctx: Context, pref: int) -> None:
    try:
        ctx.ip("rule", "del", "pref", str(pref))
    except LabError:
        pass  # never added


def orphans_timer(ctx: Context, count: int) -> Expected:
    # tcp_out_of_resources() (the retransmission timer of an orphan) asks tcp_check_oom
    # with a shift: +1 if the socket looks abandoned (nothing sent for 2*rto_max, or
    # do_reset false because the retries ran out while rto is at rto_max), +1 if
    # sk->sk_err_soft is set. Here `count` orphans alone stay within tcp_max_orphans, so
    # only the shift can kill them. sk_err_soft comes from a failed route lookup: a
    # retransmission re-looks up its stale route (inet_sk_rebuild_header), gets
    # ENETUNREACH from a rule and records it in sk_err_soft.
    # The timeline is then fixed: first RTO (~0.2 s), shift 0, every orphan survives and
    # its retransmission fails; second RTO (~0.6 s), shift 1, 2*count > tcp_max_orphans,
    # the orphans are aborted (until a cache refresh sees count/2 or fewer).
    # The tail loss probe would otherwise retransmit (and fail) some ms before the first
    # RTO, or not, depending on how fast the rules go in: off, so the shift-0 RTO happens.
    ctx.set_sysctl("net.ipv4.tcp_early_retrans", 0)
    # At its 1 s minimum (per netns, 6.18), rto reaches rto_max after ~1.4 s, so any orphan
    # left then is no longer `alive`: do_reset turns false, the shift is 2, and the
    # retry limit (0 retries with sk_err_soft) ends it. Everything is gone within ~2.5 s.
    ctx.set_sysctl("net.ipv4.tcp_rto_max_ms", 1000)
    server = pairs = None
    with _routing_rules_first(ctx):
        try:
            def setup():
                server = sockets.listener(backlog=count)
                try:
                    return server, sockets.connect_pairs(server, count, sockets.CLIENT_ADDR)
                except BaseException:
                    server.close()
                    raise
            server, pairs = ctx.inside(setup)
            # Server-to-client first: the data below arrives but its ACKs are dropped at
            # the server's route lookup, so it stays unacknowledged on the client.
            _cut(ctx, sockets.SERVER_ADDR, sockets.CLIENT_ADDR, pref=1)
            for client, _ in pairs:
                client.sendall(b"x" * 1000)
            # Then client-to-server, so the retransmissions fail their route lookup.
            _cut(ctx, sockets.CLIENT_ADDR, sockets.SERVER_ADDR, pref=2)
            host_orphans = ctx.sockstat_tcp().get("orphan", 0)  # orphans are counted host-wide
            limit = count + host_orphans
            ctx.set_global_sysctl("net.ipv4.tcp_max_orphans", limit)
            ctx.details["tcp_max_orphans"] = limit
            start = ctx.counters()
            started = time.monotonic()
            for client, _ in pairs:
                client.close()  # orphans with data unacked; the close path sees no excess
            ctx.details["timeline"] = _watch_orphans(ctx, start, started, host_orphans,
                                                     timeout_s=8.0)
        finally:
            ctx.sysctls.restore("net.ipv4.tcp_max_orphans")
            _uncut(ctx, 2)
            _uncut(ctx, 1)
            sockets.close_all(pairs or [])
            if server is not None:
                server.close()
    return {"TCPAbortOnMemory": (count // 2, count)}


def _watch_orphans(ctx: Context, start, started: float, host_orphans: int, timeout_s: float):
    """Sample the counters until the orphans are gone; return each change, timed.

    TCPTimeouts counts retransmission timer runs, so the timeline shows which RTO did
    the killing, and so the shift: with tcp_max_orphans == count, none at the first (shift
    0), aborts at the second (shift 1, sk_err_soft).
    """
    names = ("TCPTimeouts", "TCPAbortOnMemory", "TCPAbortOnTimeout")
    timeline = []
    last = None
    deadline = started + timeout_s
    while True:
        orphans = ctx.sockstat_tcp().get("orphan", 0)
        tcp_ext = procfs.read_netstat(ctx.netns)["TcpExt"]
        moved = tuple(tcp_ext.get(n, 0) - start.get(n, 0) for n in names)
        if moved != last:
            point = {"t": round(time.monotonic() - started, 3)}
            point.update(zip(names, moved))
            timeline.append(point)
            last = moved
        if orphans <= host_orphans or time.monotonic() > deadline:
            return timeline
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------
# tcp_mem: the host-wide hard limit

TINY_TCP_MEM = "10 20 40"   # pages: min, pressure, max
TCP_MEM_CAP_S = 2.0         # never leave the host like this for longer
TCP_MEM_WORK_S = 1.0        # how long the workload pushes while the limit is tiny


def _pressure_expected(ctx: Context, pressured_before) -> Expected:
    # TCPMemoryPressures counts entries into pressure (tcp_enter_memory_pressure), and the
    # state is host-wide: if the host was already under pressure there is nothing to enter.
    ctx.details["pressure_before"] = pressured_before
    return {"TCPMemoryPressures": (0 if pressured_before else 1, None)}


def _with_tiny_tcp_mem(ctx: Context, work) -> None:
    """Run work() with tcp_mem tiny; restored on return, on error, or by the watchdog."""
    started = time.monotonic()
    try:
        ctx.set_global_sysctl("net.ipv4.tcp_mem", TINY_TCP_MEM, at_most_s=TCP_MEM_CAP_S)
        work()
    finally:
        ctx.sysctls.restore("net.ipv4.tcp_mem")
    restored = ctx.sysctls.restored_at.get(("net.ipv4.tcp_mem", None), started)
    ctx.details["tiny_tcp_mem_s"] = round(restored - started, 3)


def _wait_pressure_over(ctx: Context) -> None:
    # Pressure is left when a socket frees memory below tcp_mem[0]; closing ours does it.
    # Only then is TCPMemoryPressuresChrono (ms under pressure) added.
    sockets.wait_until(lambda: procfs.tcp_memory_pressure() is not True, timeout_s=2.0)
    ctx.details["pressure_after"] = procfs.tcp_memory_pressure()


def _plain_pairs(ctx: Context, count: int, **listener_options):
    def setup():
        server = sockets.listener(backlog=count, **listener_options)
        try:
            return server, sockets.connect_pairs(server, count)
        except BaseException:
            server.close()
            raise
    return ctx.inside(setup)


def tcp_mem_send(ctx: Context, count: int) -> Expected:
    pressured_before = procfs.tcp_memory_pressure()
    server, pairs = _plain_pairs(ctx, count)
    clients = [client for client, _ in pairs]
    try:
        # Every send must charge memory to the socket (sk_wmem_schedule); above tcp_mem[2]
        # the charge is refused (sock:sock_exceed_buf_limit, kind SK_MEM_SEND) and a
        # non-blocking send returns EAGAIN after the tcp_wmem[0] guaranteed minimum.
        def push():
            sent = sockets.send_for(clients, 1 * MiB, TCP_MEM_WORK_S)
            ctx.details["bytes_sent_per_client"] = [min(sent), max(sent)]
        _with_tiny_tcp_mem(ctx, push)
    finally:
        sockets.close_all(pairs)
        server.close()
    _wait_pressure_over(ctx)
    return _pressure_expected(ctx, pressured_before)


def orphans_tcp_mem(ctx: Context, count: int) -> Expected:
    # The other half of tcp_check_oom: tcp_out_of_memory() is true for a socket holding
    # more than SOCK_MIN_SNDBUF in its write queue while memory_allocated > tcp_mem[2].
    # Closing such a socket under the tiny limit aborts it on the close path with
    # "TCP: out of memory -- consider tuning tcp_mem", with tcp_max_orphans untouched.
    # Nothing asks for memory while the limit is tiny, so TCP does not enter pressure.
    server, pairs = _plain_pairs(ctx, count, rcvbuf=4096)
    clients = [client for client, _ in pairs]
    try:
        queued = [sockets.send_until_full(client, 1 * MiB) for client in clients]
        ctx.details["bytes_queued_per_client"] = [min(queued), max(queued)]

        def close_under_limit():
            start = ctx.counters()["TCPAbortOnMemory"]
            for client in clients:
                client.close()
            ctx.details["aborted_on_close_path"] = ctx.counters()["TCPAbortOnMemory"] - start
        _with_tiny_tcp_mem(ctx, close_under_limit)
    finally:
        sockets.close_all(pairs)
        server.close()
    return {"TCPAbortOnMemory": (count, count)}


def tcp_mem_recv(ctx: Context, count: int) -> Expected:
    pressured_before = procfs.tcp_memory_pressure()

    # A slow reader: a large receive buffer that it never drains.
    server, pairs = _plain_pairs(ctx, count, rcvbuf=4 * MiB, force=True)
    clients = [client for client, _ in pairs]
    try:
        # Fill the readers' queues first, at normal limits, so that once tcp_mem is tiny
        # the memory already held is far above tcp_mem[2] and every new segment's charge
        # (sk_rmem_schedule in tcp_try_rmem_schedule) is refused: the queue is pruned
        # (PruneCalled, RcvPruned) and the segment dropped (TCPRcvQDrop, TCPOFODrop).
        prefill = sockets.send_for(clients, 1 * MiB, 0.5)
        ctx.details["bytes_queued_before"] = [min(prefill), max(prefill)]

        def push():
            sent = sockets.send_for(clients, 1 * MiB, TCP_MEM_WORK_S)
            ctx.details["bytes_sent_while_tiny"] = [min(sent), max(sent)]
        _with_tiny_tcp_mem(ctx, push)
    finally:
        sockets.close_all(pairs)
        server.close()
    _wait_pressure_over(ctx)
    expected = _pressure_expected(ctx, pressured_before)
    expected["PruneCalled"] = (1, None)
    return expected


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
    Scenario("orphans_timer",
             "orphans aborted by the retransmission timer: N orphans <= tcp_max_orphans=N, "
             "but sk_err_soft from a cut route doubles them (shift 1)",
             True, 300, orphans_timer),
    Scenario("tcp_mem_send",
             f"send side over the hard limit: tcp_mem '{TINY_TCP_MEM}' for under "
             f"{TCP_MEM_CAP_S:.0f} s, clients push 1 MiB each to servers that do not read",
             True, 50, tcp_mem_send),
    Scenario("tcp_mem_recv",
             f"receive side over the hard limit: slow readers holding their queues while "
             f"tcp_mem is '{TINY_TCP_MEM}' for under {TCP_MEM_CAP_S:.0f} s",
             True, 50, tcp_mem_recv),
    Scenario("orphans_tcp_mem",
             f"orphans aborted for memory: clients close with data queued while tcp_mem is "
             f"'{TINY_TCP_MEM}' (tcp_max_orphans untouched)",
             True, 50, orphans_tcp_mem),
)}
