"""The host-wide tcp_mem limit (pages: min, pressure, max), lowered for a moment.

Above tcp_mem[1] TCP enters memory pressure (TCPMemoryPressures); above tcp_mem[2] every
new charge of socket memory is refused (__sk_mem_raise_allocated -> suppress_allocation,
tracepoint sock:sock_exceed_buf_limit). tcp_mem is global, so it is never left tiny for
more than TCP_MEM_CAP_S, whatever happens to this process (see sysctls.py).
"""

from __future__ import annotations

import time

from tracer.host import netns, procfs

from . import sockets
from .context import Context, Expected

MiB = 1 << 20
TINY_TCP_MEM = "10 20 40"   # pages: min, pressure, max
TCP_MEM_CAP_S = 2.0         # never leave the host like this for longer
TCP_MEM_WORK_S = 1.0        # how long the workload pushes while the limit is tiny


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


def _pressure_expected(ctx: Context, pressured_before) -> Expected:
    # Pressure is left when a socket frees memory below tcp_mem[0]; closing ours does it,
    # and only then is TCPMemoryPressuresChrono (ms under pressure) added.
    sockets.wait_until(lambda: procfs.tcp_memory_pressure() is not True, timeout_s=2.0)
    ctx.details["pressure_before"] = pressured_before
    ctx.details["pressure_after"] = procfs.tcp_memory_pressure()
    # TCPMemoryPressures counts entries into pressure (tcp_enter_memory_pressure), and the
    # state is host-wide: if the host was already under pressure there is nothing to enter.
    return {"TCPMemoryPressures": (0 if pressured_before else 1, None)}


def nudge_out_of_pressure(netns_name: str) -> bool:
    """End a memory-pressure state nothing else would end; return whether TCP left it.

    TCP leaves pressure only when some socket gives memory back while the total is below
    tcp_mem[0] (__sk_mem_reduce_allocated). A lab killed while tcp_mem was tiny leaves
    the flag set after the limit is restored, until some socket's memory is freed: here,
    a loopback connection in `netns_name` moving 64 KiB and closing.
    """
    def round_trip() -> None:
        server, pairs = sockets.open_pairs(1)
        try:
            (client, accepted), = pairs
            client.sendall(b"x" * 65536)
            received = 0
            while received < 65536:
                chunk = accepted.recv(65536)
                if not chunk:
                    break
                received += len(chunk)
        finally:
            sockets.close_all(pairs)
            server.close()

    if procfs.tcp_memory_pressure() is not True:
        return True
    netns.run_in_netns(netns_name, round_trip, timeout=5.0)
    return sockets.wait_until(lambda: procfs.tcp_memory_pressure() is not True, timeout_s=1.0)


def tcp_mem_send(ctx: Context, count: int) -> Expected:
    pressured_before = procfs.tcp_memory_pressure()
    # Send-side refusals reach the tracepoint only in a narrow window: below
    # tcp_wmem[0] queued bytes a charge is always granted, and above it
    # __sk_mem_raise_allocated first shrinks sk_sndbuf to max(queued/2,
    # SOCK_MIN_SNDBUF) and grants the charge while queued + size >= sndbuf (the
    # sender then just waits for space). So a lower tcp_wmem[0] (per netns,
    # 4.15+) and small writes let queued + size stay under SOCK_MIN_SNDBUF
    # (~4.5 KB): those charges are refused with kind SK_MEM_SEND.
    ctx.set_sysctl("net.ipv4.tcp_wmem", "1024 16384 4194304")
    server, pairs = ctx.inside(lambda: sockets.open_pairs(count))
    clients = [client for client, _ in pairs]
    try:
        # The receivers, on the same host, are refused too (kind SK_MEM_RECV).
        def push():
            sent = sockets.send_for(clients, 1 * MiB, TCP_MEM_WORK_S, chunk=256)
            ctx.details["bytes_sent_per_client"] = [min(sent), max(sent)]
        _with_tiny_tcp_mem(ctx, push)
    finally:
        sockets.close_all(pairs)
        server.close()
    return _pressure_expected(ctx, pressured_before)


def tcp_mem_recv(ctx: Context, count: int) -> Expected:
    pressured_before = procfs.tcp_memory_pressure()
    # A slow reader: a large receive buffer (SO_RCVBUFFORCE, past net.core.rmem_max) that
    # it never drains.
    server, pairs = ctx.inside(
        lambda: sockets.open_pairs(count, rcvbuf=4 * MiB, force_rcvbuf=True))
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
    expected = _pressure_expected(ctx, pressured_before)
    expected["PruneCalled"] = (1, None)
    return expected


def orphans_tcp_mem(ctx: Context, count: int) -> Expected:
    # The other half of tcp_check_oom: tcp_out_of_memory() is true for a socket holding
    # more than SOCK_MIN_SNDBUF in its write queue while memory_allocated > tcp_mem[2].
    # Closing such a socket under the tiny limit aborts it on the close path with
    # "TCP: out of memory -- consider tuning tcp_mem", with tcp_max_orphans untouched.
    # Nothing asks for memory while the limit is tiny, so TCP does not enter pressure.
    server, pairs = ctx.inside(lambda: sockets.open_pairs(count, rcvbuf=4096))
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
