"""The figures `tcpoom doctor` judges, read from /proc now: sockstat(6), the
limits, the pressure flag, MemTotal and TcpExt twice, --interval apart. A
figure that cannot be read is None, with the reason in `Reader.unavailable`;
reading never fails on one.

Per namespace (4.11+): sockstat `inuse` and `tw`, TcpExt, tcp_max_tw_buckets,
tcp_rmem, tcp_wmem and tcp_tw_reuse are read inside the chosen namespace;
orphan, alloc, mem, tcp_mem and tcp_max_orphans are host-wide."""
from __future__ import annotations

import os
import time
from typing import Callable, Dict, List

from tracer.model.host_figures import Figures
from . import cgroups, netns, pcpu_margin, procfs

NETNS_TIMEOUT_S = 5.0

class Reader:
    """Reads figures, never fails on one: each miss is noted in `unavailable`."""

    def __init__(self) -> None:
        self.unavailable: List[dict] = []

    def get(self, what: str, fn: Callable, *args):
        try:
            return fn(*args)
        except netns.NetnsError as exc:
            self.miss(what, str(exc))
        except PermissionError as exc:
            self.miss(what, f"permission denied ({exc.filename or exc.strerror}): needs root")
        except FileNotFoundError as exc:
            self.miss(what, f"{exc.filename or 'file'} does not exist on this kernel")
        except (OSError, ValueError, KeyError, TimeoutError) as exc:
            self.miss(what, f"{type(exc).__name__}: {exc}")
        return None

    def miss(self, what: str, why: str) -> None:
        self.unavailable.append({"what": what, "why": why})


def tcp_ext(ns) -> Dict[str, int]:
    return procfs.read_netstat(ns)["TcpExt"]


_BLOCKED = object()   # a namespace this process may not enter


def _can_enter(ns, label: str, reader: Reader) -> bool:
    try:
        netns.run_in_netns(ns, lambda: None, timeout=NETNS_TIMEOUT_S)
        return True
    except PermissionError:
        reader.miss(f"namespace {label}",
                    "entering another network namespace needs CAP_SYS_ADMIN (root): its "
                    "sockstat (inuse, tw), sockstat6, TcpExt counters and per-namespace "
                    "sysctls (tcp_max_tw_buckets, tcp_rmem, tcp_wmem) are not available; the "
                    "host-wide figures (orphan, alloc, mem, tcp_mem, tcp_max_orphans) are "
                    "read from the caller's namespace")
    except (OSError, TimeoutError, netns.NetnsError) as exc:
        reader.miss(f"namespace {label}", f"could not enter it: {exc}")
    return False


def read_figures(ns, own: bool, label: str, interval: float,
                 reader: Reader) -> Figures:
    fig = Figures(page_size=os.sysconf("SC_PAGE_SIZE"), interval_s=interval,
                        own_netns=own, netns_label=label)
    where = "" if own else f" of namespace {label}"
    if not own and not _can_enter(ns, label, reader):
        # One line for all of them, rather than one refusal per file.
        ns = _BLOCKED
    # The figures judged are read first, then the counters' interval: a condition that
    # lasts a moment (a lowered limit) is read while it lasts.
    tcp = None
    if ns is not _BLOCKED:
        tcp = reader.get(f"/proc/net/sockstat{where}", lambda: procfs.read_sockstat(ns)["TCP"])
    if tcp is None and not own:
        # orphan, alloc and mem are host-wide: any namespace's sockstat shows them.
        host = reader.get("/proc/net/sockstat", lambda: procfs.read_sockstat()["TCP"])
        if host is not None:
            tcp = {k: host.get(k) for k in ("orphan", "alloc", "mem")}
    tcp = tcp or {}
    fig.inuse, fig.orphans, fig.tw = tcp.get("inuse"), tcp.get("orphan"), tcp.get("tw")
    fig.alloc, fig.mem_pages = tcp.get("alloc"), tcp.get("mem")
    fig.mem_margin = pcpu_margin.margin(page_size=fig.page_size)
    if ns is not _BLOCKED:
        v6 = reader.get(f"/proc/net/sockstat6{where}", procfs.read_sockstat6, ns)
        fig.inuse6 = (v6 or {}).get("TCP6", {}).get("inuse")
    limits = None
    try:
        if ns is not _BLOCKED:
            limits = procfs.tcp_limits(ns)
    except (OSError, ValueError, netns.NetnsError, TimeoutError):
        pass  # read one by one below, each miss with its own reason
    if ns is _BLOCKED:
        host = lambda name: reader.get(name, procfs.read_host_sysctl, name)  # noqa: E731
        text = host("net.ipv4.tcp_mem")
        fig.tcp_mem = procfs.triple(text) if text else None
        text = host("net.ipv4.tcp_max_orphans")
        fig.tcp_max_orphans = int(text) if text else None
    elif limits is not None:
        fig.tcp_mem, fig.tcp_max_orphans = limits.tcp_mem, limits.tcp_max_orphans
        fig.tcp_max_tw_buckets = limits.tcp_max_tw_buckets
        fig.tcp_rmem, fig.tcp_wmem = limits.tcp_rmem, limits.tcp_wmem
    else:
        host = lambda name: reader.get(name, procfs.read_host_sysctl, name)  # noqa: E731
        local = lambda name: reader.get(name + where, procfs.read_sysctl, name, ns)  # noqa: E731
        text = host("net.ipv4.tcp_mem")
        fig.tcp_mem = procfs.triple(text) if text else None
        text = host("net.ipv4.tcp_max_orphans")
        fig.tcp_max_orphans = int(text) if text else None
        text = local("net.ipv4.tcp_max_tw_buckets")
        fig.tcp_max_tw_buckets = int(text) if text else None
        text = local("net.ipv4.tcp_rmem")
        fig.tcp_rmem = procfs.triple(text) if text else None
        text = local("net.ipv4.tcp_wmem")
        fig.tcp_wmem = procfs.triple(text) if text else None
    if ns is not _BLOCKED:
        text = reader.get("net.ipv4.tcp_tw_reuse" + where, procfs.read_sysctl,
                          "net.ipv4.tcp_tw_reuse", ns)
        fig.tcp_tw_reuse = int(text) if text else None
    # The pressure flag is host-wide: read it from the caller's own namespace.
    fig.pressure = reader.get("/proc/net/protocols", procfs.tcp_memory_pressure)
    fig.mem_total = reader.get("/proc/meminfo", procfs.mem_total)
    fig.memcgs = reader.get("memory cgroups (socket memory)",
                            lambda: [m.to_json() for m in cgroups.sock_memory_all()])
    if ns is not _BLOCKED:
        fig.counters_before = reader.get(f"/proc/net/netstat{where}", tcp_ext, ns)
    if fig.counters_before is not None:
        time.sleep(interval)
        fig.counters_after = reader.get(f"/proc/net/netstat{where} (second read)", tcp_ext, ns)
    return fig
