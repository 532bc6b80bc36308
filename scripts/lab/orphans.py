"""Orphans killed by tcp_check_oom for their number: on the close path and on the timer.

tcp_check_oom(sk, shift) compares `orphans << shift` with the host-wide tcp_max_orphans.
Since 5.16 `orphans` is tcp_orphan_cache, a copy of the per-CPU sum refreshed every 100 ms
by a deferrable timer, not the live count that /proc/net/sockstat prints.
"""

from __future__ import annotations

import os

import contextlib
import socket
import time

from tracer.host import procfs

from . import sockets
from .context import Context, Expected, LabError

MiB = 1 << 20
# tcp_orphan_cache is refreshed every 100 ms (TCP_ORPHAN_TIMER_PERIOD): wait for 2 refreshes.
ORPHAN_CACHE_WAIT_S = 0.25
# Each client of orphans_close offers 4 MiB but may queue only its send buffer. Autotuned
# on loopback that reaches ~2.8 MB a socket, ~0.8 GB for 300: enough to push a small host
# into tcp_mem pressure and blur what the scenario shows. The kernel doubles the value.
ORPHAN_SNDBUF = 128 * 1024


# ---------------------------------------------------------------------------------------
# The close path

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


def _keep_cpus_busy(seconds: float) -> None:
    """Spin on every CPU this process may use for `seconds`, then return.

    The orphan cache's timer is deferrable: it runs at the next tick of the CPU that armed
    it, and an idle CPU under NO_HZ has no tick, so the refresh can come late by any amount
    (the host CI once saw the first closes pass). A busy CPU ticks, so two periods of spin
    on each CPU let the timer run on time wherever it was armed.
    """
    children = []
    for cpu in sorted(os.sched_getaffinity(0)):
        pid = os.fork()
        if pid == 0:
            try:
                os.sched_setaffinity(0, {cpu})
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    pass
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


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
    # A small receive buffer on a server that never reads closes the window fast, so most
    # of what each client sends stays in its own write queue.
    server, pairs = ctx.inside(
        lambda: sockets.open_pairs(count, sndbuf=ORPHAN_SNDBUF, rcvbuf=4096))
    seed_peer = None
    try:
        queued = [sockets.send_until_full(client, 4 * MiB) for client, _ in pairs]
        ctx.details["bytes_queued_per_client"] = [min(queued), max(queued)]
        # __tcp_close checks tcp_check_oom(sk, 0) for a socket closed with data unsent (it
        # stays in FIN_WAIT1). The close loop takes a few ms, less than a cache period:
        # with no orphan already in the cache every close would pass, and the sockets
        # would be killed a little later by their timers instead. One lingering orphan,
        # made while tcp_max_orphans still has its normal value, fills the cache first.
        seed_peer = _lingering_orphan(ctx, server)
        _keep_cpus_busy(ORPHAN_CACHE_WAIT_S)
        start = ctx.counters()["TCPAbortOnMemory"]
        # tcp_max_orphans is host-wide; 0 makes any orphan one too many.
        ctx.set_global_sysctl("net.ipv4.tcp_max_orphans", 0)
        clients = [client for client, _ in pairs]
        ctx.details["closed_before_cache_hot"] = _close_when_cache_hot(ctx, clients)
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
# The timer path, with the shift penalty

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
    return _orphans_timer(ctx, count, backed_off=False)


def orphans_timer_backoff(ctx: Context, count: int) -> Expected:
    """Killed by the third retransmission timer, with the RTO backed off twice.

    tcp_write_timeout() decides `alive` from icsk_rto, which is already the
    backed-off RTO (tcp_retransmit_timer doubles it after each round): 0.2, 0.4,
    then 0.8 s at the third round, below rto_max (1 s here), so do_reset is true
    and the shift is 1 (sk_err_soft) and exact. `icsk_rto << icsk_backoff` (the
    probe timer's formula) would give 3.2 s and call it a lower bound
    (issue 13, finding 5). Every orphan survives rounds one and two (the limit
    is 2N), then tcp_max_orphans drops to 0 and round three kills all of them."""
    return _orphans_timer(ctx, count, backed_off=True)


def _after_rounds(ctx: Context, timeouts: int, timeout_s: float) -> None:
    """Wait until TCPTimeouts (retransmission timer runs) reaches `timeouts`."""
    deadline = time.monotonic() + timeout_s
    while procfs.read_netstat(ctx.netns)["TcpExt"].get("TCPTimeouts", 0) < timeouts:
        if time.monotonic() > deadline:
            raise LabError(f"the retransmission timers did not run {timeouts} times in {timeout_s} s")
        time.sleep(0.005)


def _orphans_timer(ctx: Context, count: int, backed_off: bool) -> Expected:
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
    # Kernels before 6.18 have no tcp_rto_max_ms (RTO_MAX is 120 s there): the shift-1
    # round is the same; only the late shift-2 round would come much later.
    if os.path.exists("/proc/sys/net/ipv4/tcp_rto_max_ms"):
        ctx.set_sysctl("net.ipv4.tcp_rto_max_ms", 1000)
    else:
        ctx.details["tcp_rto_max_ms"] = "absent on this kernel"
    server = pairs = None
    with _routing_rules_first(ctx):
        try:
            server, pairs = ctx.inside(
                lambda: sockets.open_pairs(count, source=sockets.CLIENT_ADDR))
            # Server-to-client first: the data below arrives but its ACKs are dropped at
            # the server's route lookup, so it stays unacknowledged on the client.
            _cut(ctx, sockets.SERVER_ADDR, sockets.CLIENT_ADDR, pref=1)
            for client, _ in pairs:
                client.sendall(b"x" * 1000)
            # Then client-to-server, so the retransmissions fail their route lookup.
            _cut(ctx, sockets.CLIENT_ADDR, sockets.SERVER_ADDR, pref=2)
            host_orphans = ctx.sockstat_tcp().get("orphan", 0)  # orphans are counted host-wide
            # backed_off: twice as many allowed, so shift 1 kills none until the limit
            # drops to 0 after the second round
            limit = (2 if backed_off else 1) * count + host_orphans
            ctx.set_global_sysctl("net.ipv4.tcp_max_orphans", limit)
            ctx.details["tcp_max_orphans"] = limit
            start = ctx.counters()
            timeouts = procfs.read_netstat(ctx.netns)["TcpExt"].get("TCPTimeouts", 0)
            started = time.monotonic()
            for client, _ in pairs:
                client.close()  # orphans with data unacked; the close path sees no excess
            if backed_off:
                _after_rounds(ctx, timeouts + 2 * count, timeout_s=5.0)
                ctx.set_global_sysctl("net.ipv4.tcp_max_orphans", 0)
                ctx.details["tcp_max_orphans_after_round_2"] = 0
            ctx.details["timeline"] = _watch_orphans(ctx, start, started, host_orphans,
                                                     timeout_s=8.0)
        finally:
            ctx.sysctls.restore("net.ipv4.tcp_max_orphans")
            _uncut(ctx, 2)
            _uncut(ctx, 1)
            sockets.close_all(pairs or [])
            if server is not None:
                server.close()
    if backed_off:
        return {"TCPAbortOnMemory": (count, count)}
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
        moved = tuple(tcp_ext.get(n, 0) - start[n] for n in names)
        if moved != last:
            point = {"t": round(time.monotonic() - started, 3)}
            point.update(zip(names, moved))
            timeline.append(point)
            last = moved
        if orphans <= host_orphans or time.monotonic() > deadline:
            return timeline
        time.sleep(0.01)
