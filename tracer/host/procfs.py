"""Readers for the /proc files behind TCP socket memory: sockstat, netstat, protocols, sysctls.

Each file has a pure `parse_*` function (text in, dict out) and a `read_*` function that
reads the live file. `netns=None` means the calling thread's own network namespace; any
other value is a namespace reference for tracer.host.netns (name, path or inode), and the file is
then read on a helper thread that has entered that namespace, so the caller never moves.

Which figures are per namespace matters when reading them (kernel 4.11+): in sockstat, TCP
`inuse` and `tw` are per namespace while `orphan`, `alloc` and `mem` are host-wide; every
netstat counter is per namespace; tcp_mem and tcp_max_orphans are host-wide sysctls (visible
only in the initial namespace) while tcp_max_tw_buckets, tcp_rmem and tcp_wmem are per
namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from tracer.host import netns as _netns
from tracer.host.netns import NetnsRef

# /proc/thread-self, not /proc/self (= /proc/net): /proc/self/net shows the namespace of the
# process's main thread, and a helper thread inside another namespace must see its own.
_PROC_NET = "/proc/thread-self/net"


def _read_text(path: str, netns: NetnsRef = None) -> str:
    def read() -> str:
        with open(path) as fh:
            return fh.read()
    if netns is None:
        return read()
    return _netns.run_in_netns(netns, read)


def _number(word: str):
    try:
        return int(word)
    except ValueError:
        return word


# ---------------------------------------------------------------------------------------
# /proc/net/sockstat

def parse_sockstat(text: str) -> Dict[str, Dict[str, int]]:
    """`TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 0` -> {"TCP": {"inuse": 1, ...}, ...}."""
    result: Dict[str, Dict[str, int]] = {}
    for line in text.splitlines():
        section, sep, rest = line.partition(":")
        if not sep:
            continue
        words = rest.split()
        result[section.strip()] = {
            key: _number(value) for key, value in zip(words[0::2], words[1::2])
        }
    return result


def read_sockstat(netns: NetnsRef = None) -> Dict[str, Dict[str, int]]:
    return parse_sockstat(_read_text(f"{_PROC_NET}/sockstat", netns))


def read_sockstat6(netns: NetnsRef = None) -> Dict[str, Dict[str, int]]:
    """TCP6 `inuse` (per namespace); missing on a kernel without IPv6."""
    return parse_sockstat(_read_text(f"{_PROC_NET}/sockstat6", netns))


def mem_total() -> int:
    """MemTotal of /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no MemTotal in /proc/meminfo")


# ---------------------------------------------------------------------------------------
# /proc/net/netstat (and /proc/net/snmp, which has the same layout)

def parse_netstat(text: str) -> Dict[str, Dict[str, int]]:
    """Header/value line pairs -> {"TcpExt": {"TCPAbortOnMemory": 0, ...}, "IpExt": ...}.

    Each group is a line of names followed by a line of values with the same prefix; a
    kernel newer than this code simply brings names this code has not heard of.
    """
    result: Dict[str, Dict[str, int]] = {}
    lines = [line for line in text.splitlines() if line.strip()]
    for header, values in zip(lines[0::2], lines[1::2]):
        group, _, names = header.partition(":")
        value_group, _, numbers = values.partition(":")
        if group != value_group:
            raise ValueError(f"netstat: header {group!r} followed by values of {value_group!r}")
        names_list, numbers_list = names.split(), numbers.split()
        if len(names_list) != len(numbers_list):
            raise ValueError(f"netstat: {group} has {len(names_list)} names "
                             f"but {len(numbers_list)} values")
        result[group] = {name: int(n) for name, n in zip(names_list, numbers_list)}
    return result


def read_netstat(netns: NetnsRef = None) -> Dict[str, Dict[str, int]]:
    return parse_netstat(_read_text(f"{_PROC_NET}/netstat", netns))


# ---------------------------------------------------------------------------------------
# /proc/net/protocols

def parse_protocols(text: str) -> Dict[str, Dict[str, object]]:
    """One dict per protocol row, keyed by the header's column names.

    `memory` is the protocol's memory_allocated in pages (-1 when the protocol does not
    account memory); `press` is "yes", "no", or "NI" (no pressure tracking).
    """
    lines = text.splitlines()
    if not lines:
        return {}
    columns = lines[0].split()
    result: Dict[str, Dict[str, object]] = {}
    for line in lines[1:]:
        words = line.split()
        if not words:
            continue
        row = {name: _number(value) for name, value in zip(columns[1:], words[1:])}
        result[words[0]] = row
    return result


def read_protocols(netns: NetnsRef = None) -> Dict[str, Dict[str, object]]:
    return parse_protocols(_read_text(f"{_PROC_NET}/protocols", netns))


def tcp_memory_pressure(netns: NetnsRef = None) -> Optional[bool]:
    """Whether TCP is in memory-pressure mode now; None if the kernel does not say.

    The flag is host-wide (tcp_memory_pressure), whichever namespace reads it.
    """
    # the header and the TCP row only: the full parse of ~20 rows cost ~0.8 ms,
    # and serve reads this at every scrape and every second
    text = _read_text(f"{_PROC_NET}/protocols", netns)
    header, _, rest = text.partition("\n")
    columns = header.split()
    if "press" not in columns:
        return None
    for line in rest.splitlines():
        if line.startswith("TCP "):
            words = line.split()
            i = columns.index("press")
            return {"yes": True, "no": False}.get(words[i]) if i < len(words) else None
    return None


# ---------------------------------------------------------------------------------------
# sysctls

def sysctl_path(name: str) -> str:
    """"net.ipv4.tcp_mem" -> "/proc/sys/net/ipv4/tcp_mem" (a path passes through)."""
    if name.startswith("/"):
        return name
    return "/proc/sys/" + name.replace(".", "/")


def read_sysctl(name: str, netns: NetnsRef = None) -> str:
    """The value as the kernel prints it, stripped ("4096\\t131072\\t6291456" for tcp_rmem).

    /proc/sys/net resolves against the namespace of the task that opens it, so per-namespace
    sysctls are read on a thread inside `netns`.
    """
    return _read_text(sysctl_path(name), netns).strip()


def write_sysctl(name: str, value, netns: NetnsRef = None) -> None:
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    path = sysctl_path(name)

    def write() -> None:
        with open(path, "w") as fh:
            fh.write(f"{value}\n")

    if netns is None:
        write()
    else:
        _netns.run_in_netns(netns, write)


def triple(text: str) -> Tuple[int, int, int]:
    """"4096 131072 6291456" -> (4096, 131072, 6291456)."""
    low, mid, high = (int(word) for word in text.split())
    return low, mid, high


@dataclass(frozen=True)
class TcpLimits:
    """The limits a TCP socket-memory decision is made against.

    tcp_mem is in pages (min, pressure, max) and host-wide; tcp_rmem/tcp_wmem are bytes
    (min, default, max) per socket; page_size turns pages into bytes.
    """
    tcp_mem: Tuple[int, int, int]
    tcp_max_orphans: int
    tcp_max_tw_buckets: int
    tcp_rmem: Tuple[int, int, int]
    tcp_wmem: Tuple[int, int, int]
    page_size: int

    def tcp_mem_bytes(self) -> Tuple[int, int, int]:
        low, mid, high = self.tcp_mem
        return low * self.page_size, mid * self.page_size, high * self.page_size


# Host-wide sysctls exist only in the initial namespace's /proc/sys/net (tcp_mem and
# tcp_max_orphans are not in ipv4_net_table): from any other namespace they are missing.
_HOST_NETNS = "/proc/1/ns/net"


def read_host_sysctl(name: str) -> str:
    """A host-wide sysctl, read from the initial namespace if the caller is not in it."""
    try:
        return read_sysctl(name)
    except FileNotFoundError:
        return read_sysctl(name, _HOST_NETNS)


def tcp_limits(netns: NetnsRef = None) -> TcpLimits:
    """The limits that apply to sockets in `netns` (per-namespace ones read inside it)."""
    def per_netns() -> dict:
        return {
            "tcp_max_tw_buckets": int(read_sysctl("net.ipv4.tcp_max_tw_buckets")),
            "tcp_rmem": triple(read_sysctl("net.ipv4.tcp_rmem")),
            "tcp_wmem": triple(read_sysctl("net.ipv4.tcp_wmem")),
        }
    return TcpLimits(
        tcp_mem=triple(read_host_sysctl("net.ipv4.tcp_mem")),
        tcp_max_orphans=int(read_host_sysctl("net.ipv4.tcp_max_orphans")),
        page_size=os.sysconf("SC_PAGE_SIZE"),
        **(per_netns() if netns is None else _netns.run_in_netns(netns, per_netns)),
    )
