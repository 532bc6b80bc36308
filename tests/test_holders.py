"""Holders snapshots: sock_diag and /proc/net/tcp decoding, the fd scan, and a real slow
consumer in a private namespace. Only the last needs root."""

import errno
import json
import os
import select
import socket
import struct
import time

import pytest

from tracer.host import holders, netns, owners

HDR = struct.Struct("=IHHII")


def diag_msg(family=socket.AF_INET, state=1, src="10.0.0.1", sport=5000, dst="10.0.0.2",
             dport=41234, rqueue=0, wqueue=0, uid=1000, inode=4242, skmem=None, seq=1,
             flags=0x2):  # NLM_F_MULTI, as the kernel sets on dump parts
    """A SOCK_DIAG_BY_FAMILY message laid out as the kernel's inet_sk_diag_fill() does."""
    packed_src = socket.inet_pton(family, src).ljust(16, b"\0")
    packed_dst = socket.inet_pton(family, dst).ljust(16, b"\0")
    body = struct.pack("=BBBB", family, state, 0, 0)
    body += struct.pack(">HH", sport, dport) + packed_src + packed_dst
    body += struct.pack("=I", 0) + b"\xff" * 8          # if, cookie
    body += struct.pack("=IIIII", 0, rqueue, wqueue, uid, inode)
    if skmem is not None:
        payload = struct.pack(f"={len(skmem)}i", *skmem)
        body += struct.pack("=HH", 4 + len(payload), holders.INET_DIAG_SKMEMINFO) + payload
    return HDR.pack(HDR.size + len(body), holders.SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def done_msg(seq=1, error=0):
    return HDR.pack(HDR.size + 4, holders.NLMSG_DONE, 0x2, seq, 0) + struct.pack("=i", error)


def error_msg(seq=1, error=-errno.ENOENT):
    request = holders.diag_request(socket.AF_INET, seq)
    body = struct.pack("=i", error) + request[:HDR.size]
    return HDR.pack(HDR.size + len(body), holders.NLMSG_ERROR, 0, seq, 0) + body


# rmem_alloc, rcvbuf, wmem_alloc, sndbuf, fwd_alloc, wmem_queued, optmem, backlog, drops
SLOW_READER = (6291456, 6291456, 0, 87040, 1024, 0, 0, 0, 17)
BLOCKED_WRITER = (0, 131072, 2304, 4194304, 3840, 4089856, 0, 0, 0)


# ---------------------------------------------------------------------------------------
# sock_diag

def test_request_asks_tcp_dump_with_skmem_and_no_time_wait():
    req = holders.diag_request(socket.AF_INET6, seq=7)
    length, mtype, flags, seq, _pid = HDR.unpack_from(req)
    assert (length, len(req)) == (72, 72)     # nlmsghdr 16 + inet_diag_req_v2 56
    assert mtype == 20 and flags == 0x301 and seq == 7
    family, protocol, ext, states = struct.unpack_from("=BBBxI", req, 16)
    assert (family, protocol) == (socket.AF_INET6, socket.IPPROTO_TCP)
    assert ext == 1 << 6                      # bit of INET_DIAG_SKMEMINFO (7)
    assert states & (1 << 1) and states & (1 << 10) and states & (1 << 4)   # ESTAB, LISTEN, FIN_WAIT1
    assert not states & (1 << 6) and not states & (1 << 12)                 # TIME_WAIT, NEW_SYN_RECV
    assert req[24:] == bytes(48)              # any socket: zero sockid


def test_dump_part_decodes_sockets_and_skmem():
    data = (diag_msg(rqueue=6000000, wqueue=0, skmem=SLOW_READER)
            + diag_msg(family=socket.AF_INET6, state=10, src="::", sport=443, dst="::",
                       dport=0, rqueue=3, wqueue=4096, uid=0, inode=77)
            + done_msg())
    reply = holders.parse_diag_reply(data, seq=1)
    assert reply.done and not reply.error and not reply.truncated and not reply.interrupted
    reader, listener = reply.sockets
    assert (reader.local, reader.remote) == ("10.0.0.1:5000", "10.0.0.2:41234")
    assert (reader.rx_queue, reader.tx_queue, reader.uid, reader.inode) == (6000000, 0, 1000, 4242)
    assert reader.skmem == dict(zip(holders.SKMEM_FIELDS, SLOW_READER))
    # charged to tcp_mem: receive queue truesize + write queue + forward allocation
    assert reader.mem == 6291456 + 0 + 1024
    assert (listener.af, listener.local, listener.remote) == (6, "[::]:443", "[::]:0")
    # a listener's queues count connections, not bytes
    assert (listener.rx_queue, listener.tx_queue) == (0, 0)
    assert (listener.accept_queue, listener.accept_backlog) == (3, 4096)
    assert listener.skmem is None and listener.mem == 0


def test_short_skmem_of_older_kernels_and_negative_forward_alloc():
    # before 4.4 there was no drops counter; sk_forward_alloc is signed
    data = diag_msg(wqueue=500, skmem=(0, 1, 0, 2, -4096, 8192, 0, 0))
    sock = holders.parse_diag_reply(data).sockets[0]
    assert "drops" not in sock.skmem
    assert sock.skmem["fwd_alloc"] == -4096
    assert sock.mem == 8192


def test_without_skmem_memory_is_the_queued_bytes():
    sock = holders.parse_diag_reply(diag_msg(rqueue=100, wqueue=20)).sockets[0]
    assert sock.skmem is None and sock.mem == 120


def test_truncated_datagram_keeps_what_came_before():
    data = diag_msg(inode=1) + diag_msg(inode=2)
    reply = holders.parse_diag_reply(data[:-10])
    assert [s.inode for s in reply.sockets] == [1]
    assert reply.truncated and not reply.done
    # a header that claims less than an inet_diag_msg
    short = HDR.pack(HDR.size + 20, holders.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(20)
    reply = holders.parse_diag_reply(short)
    assert reply.sockets == [] and reply.truncated
    # a dangling attribute header is ignored, the socket kept
    broken_attr = diag_msg(skmem=SLOW_READER)
    broken_attr = HDR.pack(len(broken_attr) - 8, *HDR.unpack_from(broken_attr)[1:]) \
        + broken_attr[HDR.size:-8]
    sock = holders.parse_diag_reply(broken_attr).sockets[0]
    assert sock.skmem is None and sock.inode == 4242


def test_errors_end_the_dump():
    reply = holders.parse_diag_reply(error_msg())
    assert reply.done and reply.error == errno.ENOENT and reply.sockets == []
    # a dump that failed half-way says so in NLMSG_DONE
    reply = holders.parse_diag_reply(diag_msg() + done_msg(error=-errno.EINTR))
    assert reply.done and reply.error == errno.EINTR and len(reply.sockets) == 1


def test_other_sequence_numbers_and_interrupted_dumps():
    data = diag_msg(seq=1, inode=1) + diag_msg(seq=2, inode=2, flags=0x2 | 0x10) + done_msg(seq=2)
    reply = holders.parse_diag_reply(data, seq=2)
    assert [s.inode for s in reply.sockets] == [2]
    assert reply.interrupted and reply.done


# ---------------------------------------------------------------------------------------
# /proc/net/tcp

# From a little-endian 6.x host (columns after inode shortened).
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1388 0100007F:A112 01 00000000:005FE340 00:00000000 00000000  1000        0 31338 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:A112 0100007F:1388 01 003E6800:00000000 01:00000014 00000000  1000        0 31339 2 0000000000000000 20 4 30 10 -1
   3: 0100007F:1389 0100007F:A113 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   4: 0100007F:A114 0100007F:13
"""

PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:01BB 0000000000000000FFFF00000100007F:C350 04 00010000:00000000 01:00000014 00000000     0        0 0 1 0000000000000000 20 4 0 10 -1
"""


def test_proc_net_tcp_lines():
    listener, reader, writer = holders.parse_proc_net_tcp(PROC_NET_TCP, 4, byteorder="little")
    assert (listener.state, listener.local, listener.remote) == (10, "127.0.0.1:5000", "0.0.0.0:0")
    assert (listener.accept_queue, listener.rx_queue) == (2, 0)
    assert (reader.rx_queue, reader.tx_queue, reader.uid, reader.inode) == (0x5FE340, 0, 1000, 31338)
    assert reader.remote == "127.0.0.1:41234"
    assert (writer.tx_queue, writer.rx_queue, writer.inode) == (0x3E6800, 0, 31339)
    assert writer.skmem is None and writer.mem == 0x3E6800


def test_proc_net_tcp6_lines_and_orphans():
    (orphan,) = holders.parse_proc_net_tcp(PROC_NET_TCP6, 6, byteorder="little")
    assert (orphan.local, orphan.remote) == ("[::1]:443", "[::ffff:127.0.0.1]:50000")
    assert orphan.state == 4 and orphan.inode == 0 and orphan.tx_queue == 65536


def test_proc_addresses_follow_host_byte_order():
    (sock,) = holders.parse_proc_net_tcp(
        "0: 7F000001:0050 0A000002:C000 01 00000000:00000000 00:0 0 0 0 9\n", 4, byteorder="big")
    assert (sock.local, sock.remote) == ("127.0.0.1:80", "10.0.0.2:49152")


def test_gather_falls_back_to_proc_when_sock_diag_fails(monkeypatch):
    def refuse():
        raise OSError(errno.ENOENT, "sock_diag: No such file or directory")
    monkeypatch.setattr(holders, "_netlink_sockets", refuse)
    got = holders._gather()
    assert got.source == "proc" and "No such file" in got.netlink_error
    assert got.netns == os.stat("/proc/thread-self/ns/net").st_ino


# ---------------------------------------------------------------------------------------
# socket inode -> processes

def sock_with_inode(inode, uid=0, state=1, rx_queue=0):
    return holders.Sock(4, state, rx_queue, 0, uid, inode, (bytes(4), 1, bytes(4), 2))


@pytest.fixture
def fake_proc(tmp_path):
    """A /proc with four processes; 300 holds the socket 555 twice, 200 has no fd dir."""
    def process(pid, comm, fds):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        if fds is None:
            return
        (tmp_path / str(pid) / "fd").mkdir()
        for fd, target in fds.items():
            os.symlink(target, tmp_path / str(pid) / "fd" / str(fd))

    process(100, "bash", {0: "/dev/pts/0", 1: "/dev/pts/0", 3: "socket:[111]"})
    process(200, "gone", None)                 # exited between /proc listing and fd read
    process(300, "nginx", {5: "socket:[555]", 6: "pipe:[9]", 9: "socket:[555]"})
    process(400, "sshd", {0: "/dev/null", 1: "/dev/null", 2: "/dev/null", 3: "socket:[777]"})
    (tmp_path / "self").symlink_to("300")
    (tmp_path / "net").mkdir()
    return str(tmp_path)


def test_owners_found_and_named(fake_proc):
    owners = holders.find_owners([sock_with_inode(555), sock_with_inode(0)], proc_root=fake_proc)
    assert owners.pids == {555: [300]} and owners.comms == {300: "nginx"}
    assert owners.complete


def test_owners_scan_stops_once_memory_holders_are_named(fake_proc):
    # 999 is idle and held by no visible process (its owner in another pid namespace, say):
    # the scan ends with the holder found instead of reading every fd on the host
    holder, idle = sock_with_inode(555, rx_queue=100), sock_with_inode(999)
    owners = holders.find_owners([idle, holder], proc_root=fake_proc)
    assert owners.pids == {555: [300]} and owners.complete
    assert owners.fds_read == 6           # 100 and 300; 400 never read
    # with no holder at all, every socket is looked for (and the scan runs to the end)
    owners = holders.find_owners([sock_with_inode(777), sock_with_inode(999)],
                                 proc_root=fake_proc)
    assert owners.pids == {777: [400]} and owners.complete and owners.fds_read == 10


def test_owners_scan_stops_at_budget(fake_proc):
    owners = holders.find_owners([sock_with_inode(999)], budget_s=0, proc_root=fake_proc)
    assert owners.pids == {} and not owners.complete


def test_owners_scan_cut_short_carries_on_at_the_next_snapshot(fake_proc):
    # budget 0: one process per call, and each call starts where the last one stopped
    holder = sock_with_inode(555, rx_queue=100)
    first = holders.find_owners([holder], budget_s=0, proc_root=fake_proc)     # reads 100
    second = holders.find_owners([holder], budget_s=0, proc_root=fake_proc)    # 200: no fds
    third = holders.find_owners([holder], budget_s=0, proc_root=fake_proc)     # 300
    assert (first.pids, second.pids, third.pids) == ({}, {}, {555: [300]})
    assert (first.complete, second.complete, third.complete) == (False, False, True)
    assert (first.fds_read, second.fds_read, third.fds_read) == (3, 0, 3)


def test_a_huge_fd_table_is_read_in_parts(tmp_path):
    fd_dir = tmp_path / "700" / "fd"
    fd_dir.mkdir(parents=True)
    for fd in range(600):
        os.symlink("socket:[42]" if fd == 599 else "/dev/null", fd_dir / str(fd))
    wanted = {"socket:[42]": 42}
    done, found, finished, parts = 0, [], False, 0
    while not finished:
        n, hits, finished = owners._scan_pid(str(tmp_path), 700, wanted, deadline=0, skip=done)
        assert n > done    # each call gets further, even with no time at all
        done, found, parts = n, found + hits, parts + 1
    assert found == [(42, "599")] and done == 600 and parts == 3


def test_owners_remembered_between_snapshots(fake_proc):
    holders.find_owners([sock_with_inode(555)], proc_root=fake_proc)
    # the second lookup confirms the remembered fd with one readlink: no scan, no budget
    owners = holders.find_owners([sock_with_inode(555)], budget_s=0, proc_root=fake_proc)
    assert owners.pids == {555: [300]} and owners.complete and owners.fds_read == 0
    # the fd was closed and the inode reused nowhere: scanned for, not found, no error
    os.unlink(os.path.join(fake_proc, "300", "fd", "5"))
    os.unlink(os.path.join(fake_proc, "300", "fd", "9"))
    owners = holders.find_owners([sock_with_inode(555)], proc_root=fake_proc)
    assert owners.pids == {} and owners.complete


def test_own_socket_found_in_real_proc():
    with socket.socket() as sock:
        inode = os.fstat(sock.fileno()).st_ino
        owners = holders.find_owners([sock_with_inode(inode, uid=os.getuid())], budget_s=5)
    assert os.getpid() in owners.pids[inode]


# ---------------------------------------------------------------------------------------
# snapshot and lines

def test_snapshot_orders_by_memory_and_totals(monkeypatch):
    reader = holders.parse_diag_reply(diag_msg(rqueue=6000000, skmem=SLOW_READER, inode=1)).sockets[0]
    writer = holders.parse_diag_reply(diag_msg(wqueue=4000000, skmem=BLOCKED_WRITER, inode=2,
                                               state=4)).sockets[0]
    orphan = holders.parse_diag_reply(diag_msg(wqueue=60000, inode=0, state=4)).sockets[0]
    idle = holders.parse_diag_reply(diag_msg(inode=3)).sockets[0]
    listener = holders.parse_diag_reply(diag_msg(state=10, rqueue=9, wqueue=128, inode=4)).sockets[0]
    monkeypatch.setattr(holders, "_gather", lambda source: holders._Gathered(
        4026531840, "netlink", [idle, orphan, listener, writer, reader], True, None))
    monkeypatch.setattr(holders, "find_owners", lambda socks, budget: holders.Owners(
        {1: [321]}, {321: "slowapp"}, True, 1000))

    snap = holders.snapshot(top=3)
    assert json.loads(json.dumps(snap)) == snap
    assert snap["netns"] == 4026531840 and snap["sockets_total"] == 5
    assert snap["rx_bytes_total"] == 6000000                 # the listener's 9 are connections
    assert snap["tx_bytes_total"] == 4060000
    first, second, third = snap["top"]
    assert (first["inode"], first["mem"], first["pids"], first["comm"], first["owner"]) == \
        (1, 6292480, [321], "slowapp", "process")
    assert first["skmem"]["drops"] == 17
    assert (second["inode"], second["owner"], second["pids"], second["comm"]) == (2, "unknown", [], None)
    assert (third["inode"], third["owner"], third["state"]) == (0, "orphan", "FIN_WAIT1")
    assert isinstance(snap["ts_ns"], int)


def test_format_holders_reads_like_ss():
    snap = {
        "ts_ns": 1, "netns": 4026531840, "sockets_total": 2, "rx_bytes_total": 6000000,
        "tx_bytes_total": 0, "mem_bytes_total": 6292480, "owners_complete": False,
        "top": [
            {"af": 4, "local": "10.0.0.1:5000", "remote": "10.0.0.2:41234", "state": "ESTABLISHED",
             "rx_queue": 6000000, "tx_queue": 0, "mem": 6292480, "inode": 1, "uid": 0,
             "pids": [321, 322], "comm": "slowapp", "owner": "process",
             "skmem": dict(zip(holders.SKMEM_FIELDS, SLOW_READER))},
            {"af": 6, "local": "[::]:443", "remote": "[::]:0", "state": "LISTEN", "rx_queue": 0,
             "tx_queue": 0, "mem": 0, "inode": 5, "uid": 0, "pids": [], "comm": None,
             "owner": "unknown", "accept_queue": 3, "accept_backlog": 4096},
        ]}
    lines = holders.format_holders(snap)
    assert lines[0] == ("2 TCP sockets in netns 4026531840: 6.0 MiB held, 5.7 MiB unread, "
                        "0 B unacknowledged (process scan cut short)")
    assert lines[1].split() == ["State", "Recv-Q", "Send-Q", "Local", "Address:Port", "Peer",
                                "Address:Port", "Process"]
    assert lines[2].split() == ["ESTAB", "6000000", "0", "10.0.0.1:5000", "10.0.0.2:41234",
                                'users:(("slowapp",pid=321),("slowapp",pid=322))']
    assert lines[3] == "\t skmem:(r6291456,rb6291456,t0,tb87040,f1024,w0,o0,bl0,d17)"
    assert lines[4].split() == ["LISTEN", "3", "4096", "[::]:443", "[::]:*", "-"]
    assert len(holders.format_holders(snap, limit=1)) == 4
    assert holders.format_holders({"top": []}) == [
        "0 TCP sockets in netns None: 0 B held, 0 B unread, 0 B unacknowledged"]


# ---------------------------------------------------------------------------------------
# a real slow consumer

MiB = 1 << 20


def _connected_pair():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    client = socket.create_connection(srv.getsockname(), timeout=5)
    server_side, _ = srv.accept()
    return srv, client, server_side


def _fill(client, total):
    """Send up to `total` bytes without blocking; stop once the peer's window is full."""
    client.setblocking(False)
    chunk = b"\0" * 65536
    sent = 0
    while sent < total:
        try:
            sent += client.send(chunk[:total - sent])
        except BlockingIOError:
            if not select.select([], [client], [], 1.0)[1]:
                break
    return sent


@pytest.mark.kernel
def test_slow_consumer_is_named_first():
    with open("/proc/self/comm") as fh:
        comm = fh.read().strip()
    with netns.temporary() as ns:
        srv, client, server_side = netns.run_in_netns(ns, _connected_pair)
        try:
            sent = _fill(client, 2 * MiB)
            assert sent >= 1.5 * MiB
            time.sleep(0.05)     # let the last segments cross the loopback and be acked
            client_tuple = ("%s:%d" % client.getsockname(), "%s:%d" % client.getpeername())
            server_tuple = client_tuple[::-1]

            for source in ("netlink", "proc"):
                snap = holders.snapshot(netns=ns, source=source)
                assert snap["source"] == source
                assert snap["netns"] == netns.netns_inode(ns) != netns.netns_inode()
                assert snap["sockets_total"] == 3 and snap["sockets_complete"]
                first = snap["top"][0]
                assert (first["local"], first["remote"]) in (client_tuple, server_tuple)
                if (first["local"], first["remote"]) == server_tuple:
                    assert first["rx_queue"] >= MiB      # received, never read
                else:
                    assert MiB <= first["tx_queue"] <= sent  # written, never acknowledged
                assert first["mem"] >= MiB
                assert first["pids"] == [os.getpid()] and first["comm"] == comm
                assert first["owner"] == "process"
                assert ("skmem" in first) == (source == "netlink")
                # the unread and unacknowledged bytes together account for all that was sent
                assert snap["rx_bytes_total"] + snap["tx_bytes_total"] >= sent
                listener = [e for e in snap["top"] if e["state"] == "LISTEN"]
                assert listener and listener[0]["rx_queue"] == 0

            lines = holders.format_holders(snap)
            assert f'("{comm}",pid={os.getpid()})' in lines[2]
        finally:
            for sock in (server_side, client, srv):
                sock.close()
