"""TIME_WAIT bucket overflow: silent on every kernel since 2.6.37, only a counter moves."""

from __future__ import annotations

import time

from . import sockets
from .context import Context, Expected

TW_BUCKETS = 5


def tw_overflow(ctx: Context, count: int) -> Expected:
    # tcp_max_tw_buckets is per namespace since 4.11, so this changes nothing host-wide.
    ctx.set_sysctl("net.ipv4.tcp_max_tw_buckets", TW_BUCKETS)
    # TIME_WAIT sockets left by an earlier run in this namespace (they live 60 s) still
    # hold buckets.
    free_buckets = max(0, TW_BUCKETS - ctx.sockstat_tcp().get("tw", 0))

    def workload() -> None:
        server = sockets.listener(backlog=16)
        deadline = time.monotonic() + sockets.SETUP_TIMEOUT_S
        try:
            for _ in range(count):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tw_overflow: {count} connections took too long")
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
