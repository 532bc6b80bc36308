"""serve's per-cgroup metrics (issue 15): events per cgroup, family and refusal
class, the refusals by class, and the socket memory of the cgroups that matter
against their limits. Bounded by --max-cgroups (serve/cgroup_counts.py) and by
the cgroups the memory walk keeps (serve/cgroup_memory.py); read at scrape time
like every other figure (serve/collector.py); names in docs/metrics.md."""
from __future__ import annotations

from typing import Iterator, List

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .cgroup_counts import CLASSES, OTHER
from .cgroup_memory import container_label

PREFIX = "tcpoom"


def _labels(s, key) -> tuple:
    """(cgroup, container) of a counted cgroup: its path and what it names."""
    if key == OTHER:
        return OTHER, ""
    kind, cgid = key
    ident = s.cgroup_names.identity(kind, cgid) if s.cgroup_names is not None else None
    if ident is None:
        return f"id:{cgid}", ""
    path = ident.get("path", "")
    label = ident.get("label", "")
    return path, ("" if label == path else label)

def collect(s, bpf: bool) -> Iterator:
    cc = s.cgroup_counts
    if bpf:
        classes = CounterMetricFamily(
            f"{PREFIX}_memory_refusal_events", "Refusals read from the ring buffer, by why "
            "__sk_mem_raise_allocated refused (memcg: the cgroup's charge; fair_share: under "
            "pressure, above tcp_mem[2]/sockets; hard_limit: above tcp_mem[2])", labels=["class"])
        for cls in CLASSES:
            classes.add_metric([cls], cc.classes.get(cls, 0))
        yield classes
    counts = CounterMetricFamily(
        f"{PREFIX}_cgroup_events", "Events per cgroup (the socket's memory cgroup, else the "
        "owner's), family and, for refusals, class; from the ring buffer, the first --max-cgroups "
        "cgroups with their own series, the rest cgroup=\"other\"",
        labels=["cgroup", "container", "family", "class"])
    paths = []
    labels = {}
    for (key, fam, cls), n in sorted(cc.snapshot().items(), key=lambda kv: (str(kv[0][0]),) + kv[0][1:]):
        if key not in labels:
            labels[key] = _labels(s, key)
            mem = s.cgroup_memory
            if key != OTHER and mem is not None and mem.holds(key[0]) and labels[key][0].startswith("/"):
                paths.append(labels[key][0])
        cgroup, container = labels[key]
        counts.add_metric([cgroup, container, fam, cls], n)
    yield counts
    if s.cgroup_names is not None:
        s.cgroup_names.drain()          # identities are kept by Names; nothing to record here
    if s.cgroup_memory is not None:
        yield from _memory(s, paths)


def _memory(s, paths: List[str]):
    lab = ["cgroup", "container"]
    sock = GaugeMetricFamily(f"{PREFIX}_cgroup_socket_memory_bytes", "Socket memory charged to the "
                             "cgroup (v2 memory.stat sock; v1 memory.kmem.tcp.usage_in_bytes)", labels=lab)
    used = GaugeMetricFamily(f"{PREFIX}_cgroup_memory_bytes", "All memory of the cgroup (v2 "
                             "memory.current): memory.max refuses socket charges on this", labels=lab)
    limit = GaugeMetricFamily(f"{PREFIX}_cgroup_socket_memory_limit_bytes", "The limit that refuses "
                              "the cgroup's socket charges, by file (v2 memory.max, memory.high; "
                              "v1 memory.kmem.tcp.limit_in_bytes); absent when unlimited",
                              labels=lab + ["limit"])
    head = GaugeMetricFamily(f"{PREFIX}_cgroup_socket_memory_headroom_bytes", "limit minus what it "
                             "is tested against (v2 memory.current, v1 socket memory)",
                             labels=lab + ["limit"])
    fail = CounterMetricFamily(f"{PREFIX}_cgroup_socket_memory_failures", "v1 memory.kmem.tcp.failcnt: "
                               "socket charges the cgroup's tcp limit refused", labels=lab)
    try:
        figures = s.cgroup_memory.read(paths)
    except OSError:
        s.scrape_errors += 1
        figures = []
    for sm in figures:
        ls = [sm.path, container_label(sm.path)]
        if sm.sock is not None:
            sock.add_metric(ls, sm.sock)
        if sm.version == "v2":
            if sm.usage is not None:
                used.add_metric(ls, sm.usage)
            limits = (("memory.max", sm.limit), ("memory.high", sm.high))
            against = sm.usage
        else:
            if sm.failcnt is not None:
                fail.add_metric(ls, sm.failcnt)
            limits = ((sm.limit_name, sm.limit),)
            against = sm.sock
        for name, value in limits:
            if value is None:
                continue
            limit.add_metric(ls + [name], value)
            if against is not None:
                head.add_metric(ls + [name], value - against)
    walk = GaugeMetricFamily(f"{PREFIX}_cgroup_walk_seconds", "How long the last walk of the memory "
                             "hierarchy for the top cgroups by socket memory took (off the scrape)")
    walk.add_metric([], s.cgroup_memory.walk_s)
    walked = GaugeMetricFamily(f"{PREFIX}_cgroup_walk_cgroups", "Cgroups that walk visited")
    walked.add_metric([], s.cgroup_memory.walked)
    yield walk
    yield walked
    yield sock
    yield used
    yield limit
    yield head
    yield fail
