"""The figures /proc shows about TCP memory at one moment, as `tcpoom doctor`
judges them (read by tracer/host/figures.py, judged by tracer/analysis/doctor.py)."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

Triple = Tuple[int, int, int]


@dataclasses.dataclass
class Figures:
    """What the doctor judges. None means "could not be read" (the rule is then skipped).

    From /proc/net/sockstat of the chosen namespace: `inuse` and `tw` are per namespace,
    `orphans`, `alloc` and `mem_pages` host-wide; `inuse6` is from sockstat6.
    """
    page_size: int = 4096
    inuse: Optional[int] = None
    inuse6: Optional[int] = None
    orphans: Optional[int] = None
    tw: Optional[int] = None
    alloc: Optional[int] = None
    mem_pages: Optional[int] = None
    pressure: Optional[bool] = None         # /proc/net/protocols TCP "press"
    tcp_mem: Optional[Triple] = None        # pages, host-wide
    tcp_max_orphans: Optional[int] = None   # host-wide
    tcp_max_tw_buckets: Optional[int] = None  # per namespace (4.11+)
    tcp_rmem: Optional[Triple] = None       # bytes, per namespace (4.15+)
    tcp_wmem: Optional[Triple] = None
    tcp_tw_reuse: Optional[int] = None      # per namespace
    mem_total: Optional[int] = None         # bytes, /proc/meminfo MemTotal
    #: 6.0+: pages each side of mem_pages that per-CPU reserves may hold (host/pcpu_margin.py)
    mem_margin: Optional[dict] = None
    counters_before: Optional[Dict[str, int]] = None
    counters_after: Optional[Dict[str, int]] = None
    interval_s: float = 1.0
    own_netns: bool = True                  # the caller's namespace (sysctl.d reaches it?)
    netns_label: str = ""                   # how the namespace was named, for advice
    # memory cgroups with socket memory (tracer.host.cgroups.SockMemory.to_json()), largest
    # first; None = not read. The kernel charges a socket to its memcg before any tcp_mem test.
    memcgs: Optional[List[dict]] = None
