"""Memory-cgroup refusals beside tcp_mem hard-limit refusals, in one run and one namespace.

A reader process in a v1 memory cgroup with a small memory.kmem.tcp.limit_in_bytes
holds connections it never reads; the lab's clients fill them until the cgroup's
charge fails, while, for TCP_MEM_WORK_S, tcp_mem_send's tiny host-wide tcp_mem
refuses the other sockets (the clients' sends, the tcp_mem_send pairs).

Ground truth (6.18, mm/memcontrol-v1.c memcg1_charge_skmem, mm/page_counter.c):
every failed page_counter_try_charge() of the cgroup's tcpmem counter adds one to
memory.kmem.tcp.failcnt, including a __GFP_NOFAIL charge that then goes through
anyway. Those forced charges are sk_forced_mem_schedule (FIN, SYN: the reader
sends neither; it closes with unread data, which sends a reset), inet_csk_accept's
charge of what a child holds before accept (the clients send only after every
connection is accepted), and a send-side refusal granted because the queue is
above sk_sndbuf (the reader never sends). So here every failcnt increment is one
refused receive charge of the reader's sockets (__sk_mem_raise_allocated: the
memcg charge comes before any tcp_mem test), each traced by
sock:sock_exceed_buf_limit (6.18 traces failed memcg charges on receive too).
The reader is scripts/lab/owner_workload.py's `held` role.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from tracer.host import cgroups as cg
from tracer.host import procfs

from . import cgroups as labcg
from . import sockets
from .context import Context, Expected, LabError
from .tcp_mem import MiB, TCP_MEM_WORK_S, _pressure_expected, _with_tiny_tcp_mem

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEMCG_LIMIT = 1 * MiB       # the reader's memory.kmem.tcp.limit_in_bytes
READER_RCVBUF = 8 * MiB     # far above the limit: the cgroup refuses, not the buffer
READER_CONNS = 2
MEMCG_ONLY_S = 0.3          # memcg refusals alone, before and after the tiny tcp_mem


def _failcnt(memory_dir: str) -> int:
    with open(os.path.join(memory_dir, "memory.kmem.tcp.failcnt")) as f:
        return int(f.read())


def _remove(c: labcg.LabCgroup) -> None:
    for d in c.dirs:
        labcg.rmdir_patiently(d)
    # the shared lab root too, when nothing else of any lab uses it
    m = cg.read_mounts()
    for root in (m.v2, m.v1_memory):
        if root:
            try:
                os.rmdir(os.path.join(root, labcg.LAB_ROOT))
            except OSError:
                pass


def _spawn_reader(ctx: Context, c: labcg.LabCgroup) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ctx.netns, sys.executable, "-m",
                          "scripts.lab.owner_workload", "held", str(READER_RCVBUF),
                          str(READER_CONNS)],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        # `ip netns exec` execs the command: same pid. Moved in before any socket exists
        # (mem_cgroup_sk_alloc takes the memcg of the task creating or accepting it).
        c.add(p.pid)
        p.stdin.write("go\n")
        p.stdin.flush()
    except BaseException:
        p.kill()
        p.wait()
        raise
    return p


def memcg_beside_tcp_mem(ctx: Context, count: int) -> Expected:
    mounts = cg.read_mounts()
    if not mounts.v1_memory or mounts.memory_root != mounts.v1_memory:
        raise LabError("memcg_beside_tcp_mem needs the v1 memory controller "
                       "(memory.kmem.tcp.limit_in_bytes)")
    pressured_before = procfs.tcp_memory_pressure()
    c = labcg.LabCgroup(mounts, f"{labcg.LAB_ROOT}/tcpoom-lab-memcg-{os.getpid()}.service").make()
    reader = None
    try:
        c.limit_socket_memory(MEMCG_LIMIT)
        reader = _spawn_reader(ctx, c)
        port = int(reader.stdout.readline())
        ctx.details["memcg_port"] = port
        ctx.details["memcg"] = c.rel
        ctx.set_sysctl("net.ipv4.tcp_wmem", "1024 16384 4194304")   # as tcp_mem_send

        def connect_memcg_clients():
            out = []
            for _ in range(READER_CONNS):
                s = socket.socket()
                s.settimeout(sockets.CONNECT_TIMEOUT_S)
                s.connect((sockets.SERVER_ADDR, port))
                out.append(s)
            return out
        memcg_clients = ctx.inside(connect_memcg_clients)
        if reader.stdout.readline().strip() != "accepted":
            raise LabError("the memcg reader did not accept its connections")
        failcnt_before = _failcnt(c.memory_dir)
        server, pairs = ctx.inside(lambda: sockets.open_pairs(count))
        clients = [client for client, _ in pairs]
        try:
            def memcg_only():
                ctx.inside(lambda: sockets.send_for(memcg_clients, 4 * MiB, MEMCG_ONLY_S))
            memcg_only()

            def both():
                sent = ctx.inside(lambda: sockets.send_for(clients + memcg_clients, 1 * MiB,
                                                           TCP_MEM_WORK_S, chunk=256))
                ctx.details["bytes_sent_per_client"] = [min(sent), max(sent)]
            _with_tiny_tcp_mem(ctx, both)
            memcg_only()
            # The reader closes with data unread: a reset, no FIN (no forced charge), and
            # no more charges to its sockets once it is gone.
            reader.stdin.write("done\n")
            reader.stdin.flush()
            reader.wait(timeout=10)
            ctx.details["memcg_failcnt"] = _failcnt(c.memory_dir) - failcnt_before
            ctx.details["memcg_limit_pages"] = MEMCG_LIMIT // 4096
        finally:
            sockets.close_all(pairs)
            sockets.close_all(memcg_clients)
            server.close()
    finally:
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
        _remove(c)
    return _pressure_expected(ctx, pressured_before)
