"""The /proc parsers, fed with text as kernels print it. No root needed."""

import pytest

from tracer.host import netns, procfs

SOCKSTAT = """\
sockets: used 1209
TCP: inuse 27 orphan 3 tw 5012 alloc 341 mem 318
UDP: inuse 6 mem 2
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
"""

# Shortened from a 6.18 /proc/net/netstat: header line, value line, per group.
NETSTAT = """\
TcpExt: SyncookiesSent PruneCalled RcvPruned TW TCPAbortOnMemory TCPMemoryPressures \
TCPMemoryPressuresChrono TCPTimeWaitOverflow TCPRcvQDrop TCPOFODrop
TcpExt: 0 101 0 10 300 1 1004 295 100 1
IpExt: InNoRoutes InOctets OutOctets
IpExt: 0 123456789012 123456789012
MPTcpExt: MPCapableSYNRX
MPTcpExt: 0
"""

PROTOCOLS = """\
protocol  size sockets  memory press maxhdr  slab module     cl co di ac io in de sh ss gs se re bi br ha uh gp em
PACKET    1600      0      -1   NI       0   no   kernel      n  n  n  n  n  n  n  n  n  n  n  n  n  n  n  n  n  n
UDP       1280      6       2   NI       0   yes  kernel      y  y  y  n  y  y  y  n  y  y  y  y  y  n  n  y  y  n
TCP       2304    341     318  yes     320   yes  kernel      y  y  y  y  y  y  y  y  y  y  y  y  n  y  y  y  y  y
"""


def test_sockstat_sections_and_fields():
    stat = procfs.parse_sockstat(SOCKSTAT)
    assert stat["TCP"] == {"inuse": 27, "orphan": 3, "tw": 5012, "alloc": 341, "mem": 318}
    assert stat["sockets"] == {"used": 1209}
    assert stat["FRAG"]["memory"] == 0
    assert stat["UDPLITE"] == {"inuse": 0}


def test_sockstat_ignores_blank_and_odd_lines():
    assert procfs.parse_sockstat("\n\nnot a section\nTCP: inuse 1\n") == {"TCP": {"inuse": 1}}


def test_netstat_pairs_names_with_values():
    stat = procfs.parse_netstat(NETSTAT)
    tcp = stat["TcpExt"]
    assert tcp["TCPAbortOnMemory"] == 300
    assert tcp["TCPTimeWaitOverflow"] == 295
    assert tcp["TCPMemoryPressuresChrono"] == 1004
    assert stat["IpExt"]["InOctets"] == 123456789012
    assert stat["MPTcpExt"] == {"MPCapableSYNRX": 0}


def test_netstat_negative_values_are_kept():
    # /proc/net/snmp has the same layout and prints Tcp MaxConn as -1.
    assert procfs.parse_netstat("Tcp: RtoMin MaxConn\nTcp: 200 -1\n") == {
        "Tcp": {"RtoMin": 200, "MaxConn": -1}}


def test_netstat_rejects_misaligned_text():
    with pytest.raises(ValueError):
        procfs.parse_netstat("TcpExt: A B\nTcpExt: 1\n")
    with pytest.raises(ValueError):
        procfs.parse_netstat("TcpExt: A\nIpExt: 1\n")


def test_protocols_columns_and_pressure_flag():
    protocols = procfs.parse_protocols(PROTOCOLS)
    assert protocols["TCP"]["memory"] == 318
    assert protocols["TCP"]["press"] == "yes"
    assert protocols["UDP"]["press"] == "NI"
    assert protocols["PACKET"]["memory"] == -1
    assert protocols["TCP"]["module"] == "kernel"


def test_tcp_memory_pressure_maps_yes_no_ni(monkeypatch):
    for press, expected in (("yes", True), ("no", False), ("NI", None)):
        text = PROTOCOLS.replace("318  yes", f"318  {press}")
        monkeypatch.setattr(procfs, "_read_text", lambda path, ns=None, t=text: t)
        assert procfs.tcp_memory_pressure() is expected


def test_sysctl_names_map_to_proc_sys_paths():
    assert procfs.sysctl_path("net.ipv4.tcp_mem") == "/proc/sys/net/ipv4/tcp_mem"
    assert procfs.sysctl_path("net.core.rmem_max") == "/proc/sys/net/core/rmem_max"
    assert procfs.sysctl_path("/proc/sys/vm/overcommit_memory") == "/proc/sys/vm/overcommit_memory"


def test_tcp_limits_from_the_running_kernel_are_consistent():
    limits = procfs.tcp_limits()
    low, pressure, high = limits.tcp_mem
    assert 0 < low <= pressure <= high
    assert limits.tcp_mem_bytes() == (low * limits.page_size, pressure * limits.page_size,
                                      high * limits.page_size)
    assert limits.tcp_rmem[0] <= limits.tcp_rmem[2] and limits.tcp_wmem[0] <= limits.tcp_wmem[2]
    assert limits.tcp_max_orphans >= 0 and limits.tcp_max_tw_buckets >= 0


def test_reading_the_own_namespace_needs_no_helper_thread():
    assert "TCP" in procfs.read_sockstat()
    assert "TCPAbortOnMemory" in procfs.read_netstat()["TcpExt"]
    assert procfs.read_sysctl("net.ipv4.tcp_mem").count("\t") == 2


def test_an_inode_is_its_own_namespace_reference():
    assert netns.netns_inode(4026531840) == 4026531840
    assert netns.netns_inode() == netns.netns_inode("/proc/thread-self/ns/net")


def test_unknown_namespace_names_are_reported():
    with pytest.raises(netns.NetnsError):
        netns.resolve("tcpoom-no-such-namespace")
