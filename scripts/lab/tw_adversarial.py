"""TIME_WAIT overflows next to the closes that look like them, with the table full.

Every scenario first fills the lab namespace's TIME_WAIT table (tcp_max_tw_buckets is per
namespace since 4.11: nothing changes host-wide), checks it is full, then mixes genuine
overflows with the adversaries of tw_moves.py. What the kernel counts is the truth; the
expected range only says the condition really happened.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from typing import Dict, List

from tracer.host import netns

from . import tw_moves
from .context import WORKLOAD_TIMEOUT_S, Context, Expected, LabError
from .time_wait import TW_BUCKETS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOVES_DEADLINE_S = 8.0


def _fill_table(ctx: Context) -> None:
    """tcp_max_tw_buckets=TW_BUCKETS, and that many TIME_WAIT sockets in it."""
    ctx.set_sysctl("net.ipv4.tcp_max_tw_buckets", TW_BUCKETS)
    free = max(0, TW_BUCKETS - ctx.sockstat_tcp().get("tw", 0))

    def fill() -> None:
        server = tw_moves.listener()
        try:
            for _ in range(free):
                tw_moves.genuine(server)
        finally:
            server.close()

    ctx.inside(fill)
    tw = ctx.sockstat_tcp().get("tw", 0)
    if tw < TW_BUCKETS:
        raise LabError(f"the TIME_WAIT table is not full: tw={tw} < {TW_BUCKETS}")
    ctx.details["tw_before"] = tw


def _expect(ctx: Context, done: Dict[str, int], aborts: int) -> Expected:
    low, high = tw_moves.expected_overflows(done)
    ctx.details["moves"] = done
    ctx.details["tw_after"] = ctx.sockstat_tcp().get("tw")
    # SO_LINGER {1,0} and TCP_LINGER2 -1 both count TCPAbortOnData
    return {"TCPTimeWaitOverflow": (low, high), "TCPAbortOnData": (aborts, None)}


def _mix(ctx: Context, count: int, names: List[str], family: int = socket.AF_INET) -> Dict[str, int]:
    def workload() -> Dict[str, int]:
        addr = "::1" if family == socket.AF_INET6 else tw_moves.sockets.SERVER_ADDR
        server = tw_moves.listener(family, addr)
        try:
            return tw_moves.run_moves([(n, server) for n in names], count, MOVES_DEADLINE_S)
        finally:
            server.close()
    return ctx.inside(workload)


def _aborts(done: Dict[str, int]) -> int:
    return done.get("linger0", 0) + done.get("linger2", 0)


def tw_linger0(ctx: Context, count: int) -> Expected:
    _fill_table(ctx)
    done = _mix(ctx, count, ["genuine", "linger0", "unspec"])
    return _expect(ctx, done, _aborts(done))


def tw_late_data(ctx: Context, count: int) -> Expected:
    _fill_table(ctx)
    done = _mix(ctx, count, ["genuine", "linger2", "late_data"])
    return _expect(ctx, done, _aborts(done))


def tw_ipv6(ctx: Context, count: int) -> Expected:
    _fill_table(ctx)

    def workload() -> Dict[str, int]:
        v6 = tw_moves.listener(socket.AF_INET6, "::1")
        v4 = tw_moves.listener()
        try:
            # a v4 neighbour with the same table, then every v6 move
            pattern = [("genuine", v6), ("linger0", v6), ("genuine", v4), ("linger2", v6),
                       ("unspec", v6)]
            return tw_moves.run_moves(pattern, count, MOVES_DEADLINE_S)
        finally:
            v6.close()
            v4.close()

    done = ctx.inside(workload)
    return _expect(ctx, done, _aborts(done))


# Same 4-tuples in both namespaces: the server's port and, per connection, the client's.
SAME_SERVER_PORT = 24000
SAME_CLIENT_PORT_BASE = 20000


def _same_tuples(count: int, with_aborts: bool) -> Dict[str, int]:
    server = tw_moves.listener(port=SAME_SERVER_PORT)
    done: Dict[str, int] = {}
    try:
        for i in range(count):
            tw_moves.genuine(server, bind=(tw_moves.sockets.SERVER_ADDR, SAME_CLIENT_PORT_BASE + i))
            done["genuine"] = done.get("genuine", 0) + 1
            if with_aborts and i % 2:
                tw_moves.linger0(server)
                done["linger0"] = done.get("linger0", 0) + 1
    finally:
        server.close()
    return done


def tw_two_netns(ctx: Context, count: int) -> Expected:
    """The lab's namespace overflows (table full) while a second namespace makes the same
    4-tuples into real TIME_WAIT sockets (its table is large), at the same time."""
    _fill_table(ctx)
    per_ns = max(1, count // 2)
    with netns.temporary("tcpoom-lab-") as other:
        ctx.sysctls.set("net.ipv4.tcp_max_tw_buckets", 100000, other)
        try:
            before = _tcpext(other)
            outcome: dict = {}

            def neighbour() -> None:
                try:
                    outcome["done"] = netns.run_in_netns(other, _same_tuples, per_ns, False,
                                                         timeout=WORKLOAD_TIMEOUT_S)
                except BaseException as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=neighbour, daemon=True)
            thread.start()
            done = ctx.inside(_same_tuples, per_ns, True)
            thread.join(WORKLOAD_TIMEOUT_S)
            if "error" in outcome or thread.is_alive():
                raise LabError(f"the neighbour namespace failed: {outcome.get('error', 'timeout')}")
            after = _tcpext(other)
            ctx.details["neighbour"] = {
                "moves": outcome["done"],
                "TCPTimeWaitOverflow": after.get("TCPTimeWaitOverflow", 0) - before.get("TCPTimeWaitOverflow", 0),
            }
        finally:
            ctx.sysctls.restore("net.ipv4.tcp_max_tw_buckets", other)
    return _expect(ctx, done, _aborts(done))


def _tcpext(ns: str) -> Dict[str, int]:
    from tracer.host import procfs
    return procfs.read_netstat(ns).get("TcpExt", {})


WORKER_PATTERN = "genuine,linger0,unspec,linger2"


def tw_two_cpus(ctx: Context, count: int) -> Expected:
    """Two processes in the lab's namespace, pinned to two CPUs, each mixing overflows with
    resets and reuses: cancels and confirmations from both CPUs at once."""
    _fill_table(ctx)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        raise LabError("tw_two_cpus needs two CPUs")
    per_cpu = max(1, count // 2)
    procs = []
    for cpu in cpus:
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ctx.netns, sys.executable, "-m", "scripts.lab.tw_worker",
             "--pattern", WORKER_PATTERN, "--count", str(per_cpu)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda cpu=cpu: os.sched_setaffinity(0, {cpu})))
    done: Dict[str, int] = {}
    for proc in procs:
        try:
            # a Python start each: seconds in a TCG guest (scripts/vm)
            out, err = proc.communicate(timeout=3 * WORKLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise LabError("tw_two_cpus: a worker did not finish") from None
        if proc.returncode != 0:
            raise LabError(f"tw_two_cpus: a worker failed: {err.strip().splitlines()[-1:]}")
        for name, n in json.loads(out).items():
            done[name] = done.get(name, 0) + n
    ctx.details["cpus"] = cpus
    return _expect(ctx, done, _aborts(done))
