"""The sizing rules both diagnoses apply, from a recording (diagnosis.py) or
from what /proc shows now (doctor.py): how big each limit should be, and the
advice that goes with it, said once.

- tcp_max_tw_buckets: twice the demand (a TIME_WAIT socket costs a few
  hundred bytes);
- tcp_max_orphans: four times the peak, for the timer path's `orphans << shift`
  penalty (shift up to 2), each orphan pinning up to 64 KiB;
- tcp_mem: 1.5 times the pages in use at the hard limit, pressure at 3/4 and
  low at 1/2 of it; in pages, never bytes.
"""
from __future__ import annotations

from typing import List, Tuple

ORPHAN_COST = 64 * 1024    # ip-sysctl.rst: "each orphan eats up to ~64K of unswappable memory"


def round_up(n: float, step: int) -> int:
    """At least one step."""
    return ((max(int(n), 1) + step - 1) // step) * step


def raise_only(wanted, at_start):
    """The one rule every sysctl advice goes through: a value is only ever
    raised from the host's value (at the start of a recording, or now), never
    lowered (a limit lowered in a lab namespace, or for a moment, must not
    become the advice: applying it would cut the host's limit). A triple
    (tcp_mem) is raised member by member. None when nothing would be raised."""
    if isinstance(wanted, (list, tuple)):
        start = [int(v) for v in at_start] if at_start else [0] * len(wanted)
        value = [max(int(w), s) for w, s in zip(wanted, start)]
        return value if value != start else None
    if at_start is None:
        return int(wanted)
    return int(wanted) if int(wanted) > int(at_start) else None


def tw_buckets_for(demand: int) -> int:
    return round_up(demand * 2, 1024)


def max_orphans_for(peak: int) -> int:
    return round_up(peak * 4, 1024)


def tcp_mem_for(pages: float, at_least: int = 0) -> Tuple[int, int, int]:
    """low, pressure, high, the high limit at 1.5 times `pages` (and at least
    `at_least`)."""
    high = max(round_up(pages * 3 // 2, 256), at_least)
    return high // 2, high * 3 // 4, high


def sysctl_line(name: str, value) -> str:
    return f"net.ipv4.{name} = " + (" ".join(map(str, value)) if isinstance(value, (list, tuple))
                                    else str(value))


# ---------------------------------------------------------------- TIME_WAIT

TW_SILENT = ("the kernel logs nothing for this since 2.6.37: only TcpExt "
             "TCPTimeWaitOverflow moves")

TW_WHO = "Find who closes first: the side that closes first holds TIME_WAIT"

TW_ADVICE: List[str] = [
    "For outbound connection churn (this host is the client): reuse connections "
    "(keep-alive, pooling), and set net.ipv4.tcp_tw_reuse=1 so new outbound "
    "connections may reuse TIME_WAIT ports safely (timestamps keep it safe).",
    "Never tcp_tw_recycle: it broke clients behind NAT and was removed in Linux 4.12.",
]

TW_WHY = ("Without TIME_WAIT a late duplicate segment of the old connection can be taken "
          "for data of a new one on the same 4-tuple.")


def tw_raise(new_limit: int, basis: str) -> str:
    return (f"If the churn is legitimate, raise net.ipv4.tcp_max_tw_buckets to about "
            f"{new_limit} ({basis}); a TIME_WAIT socket costs only a few hundred bytes.")


# ------------------------------------------------------------------ orphans

ORPHANS_CAUSE = ("Orphans are sockets the application closed with data still unsent or "
                 "unacknowledged: look for peers that stop reading{where} and for applications "
                 "closing busy connections; a lower net.ipv4.tcp_orphan_retries ends them sooner.")


def orphans_raise(want: int) -> str:
    return (f"Size net.ipv4.tcp_max_orphans at about four times the peak to absorb the "
            f"4x penalty: {want}")


# ------------------------------------------------------------------ tcp_mem

def tcp_mem_raise(new, page: int) -> str:
    return (f"If the memory is really needed, raise net.ipv4.tcp_mem - in PAGES of {page} bytes, "
            f"not bytes - to about {new[0]} {new[1]} {new[2]}")
