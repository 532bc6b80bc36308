"""Memory-cgroup refusals beside tcp_mem hard-limit refusals, each classified right.

The lab scenario memcg_beside_tcp_mem (scripts/lab/memcg_tcp_mem.py) runs, in one
namespace and one run, a reader in a v1 memory cgroup whose socket limit refuses
its receive charges, and tcp_mem_send's tiny host-wide tcp_mem refusing the other
sockets. Ground truth is the socket: every refusal of the reader's sockets (its
listening port) must be `memcg`, every other one not. The total is the tracer's
in-kernel per-CPU count of refusals, every one printed, none lost.

memory.kmem.tcp.failcnt would count the memcg refusals (the scenario avoids the
forced __GFP_NOFAIL charges it would also count), but kernels with
page_counter.track_failcnt (6.18 read; the release that added it not checked)
keep a failcnt only for the v1 `memory` counter (mem_cgroup_css_alloc sets
memory.track_failcnt; tcpmem is initialised without it), so on 6.18 it stays 0:
compared only where it moves.
"""
import os

import pytest

from scripts.counts_check import run_once
from scripts.lab import cgroups as labcg
from tracer.host import cgroups as cg

pytestmark = pytest.mark.kernel

RUNS = 20
TINY_MAX = 40       # tcp_mem[2] while tcp_mem_send's limit is on (scripts/lab/tcp_mem.py)


def _tcp_mem() -> str:
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return f.read()


def _problems(r) -> list:
    d = r["details"]
    port = d["memcg_port"]
    mine = [e for e in r["events"] if e["sport"] == port]
    others = [e for e in r["events"] if e["sport"] != port]
    bad = []
    if r["returncode"] != 0 or r["lost"] != 0 or r["printed"] != r["seen"]:
        bad.append(f"rc {r['returncode']} lost {r['lost']} printed {r['printed']} seen {r['seen']}")
    if not mine or not others:
        bad.append(f"{len(mine)} memcg-socket and {len(others)} other refusals")
    bad += [f"memcg socket refusal classified {e['mem_class']}" for e in mine
            if e["mem_class"] != "memcg" or e["memcg"] != d["memcg"]
            or e["memcg_limit"] != d["memcg_limit_pages"]][:3]
    bad += [f"other socket refusal classified {e['mem_class']}" for e in others
            if e["mem_class"] not in ("hard_limit", "fair_share")][:3]
    if not any(e["mem_class"] == "hard_limit" for e in others):
        bad.append("no hard-limit refusal")
    if d["memcg_failcnt"] and d["memcg_failcnt"] != len(mine):
        bad.append(f"memory.kmem.tcp.failcnt +{d['memcg_failcnt']}, memcg refusals {len(mine)}")
    return bad


def _side_by_side(r) -> bool:
    """A memcg refusal while the tiny tcp_mem was on: the two refusals beside
    each other. The workload's timing decides that, not tcpoom (CI saw 1 run
    in 20 without it), so such a run is repeated instead of counted."""
    port = r["details"]["memcg_port"]
    return any(e["tcp_mem"][2] == TINY_MAX for e in r["events"] if e["sport"] == port)


@pytest.mark.skipif(not cg.read_mounts().v1_memory, reason="needs the v1 memory controller")
def test_memcg_and_hard_limit_refusals_classified_right_20_of_20():
    tcp_mem = _tcp_mem()
    figures, bad, apart = [], [], 0
    i = 0
    while i < RUNS and apart <= RUNS // 4:
        r = run_once("memcg_beside_tcp_mem")
        port = r["details"].get("memcg_port")
        mine = sum(e["sport"] == port for e in r["events"])
        figures.append(f"{mine}+{r['printed'] - mine}={r['seen']}")
        problems = _problems(r)        # every run, side by side or not, is classified right
        if problems:
            bad.append((i, problems, r["stderr"][-300:]))
        if _side_by_side(r):
            i += 1
        else:
            apart += 1
            figures[-1] += "(apart)"
        assert _tcp_mem() == tcp_mem                 # restored after every run
        assert labcg.leftover() is None or not os.path.exists(
            os.path.join(cg.read_mounts().v1_memory, r["details"]["memcg"].lstrip("/")))
    runs = i + apart
    print(f"memcg_beside_tcp_mem {runs - len(bad)}/{runs} right; memcg+other=seen: {' '.join(figures)}")
    assert i == RUNS, f"only {i} of {i + apart} runs had a memcg refusal while tcp_mem was tiny"
    assert not bad, f"{runs - len(bad)}/{runs} right; memcg+other=seen {' '.join(figures)}; {bad[:3]}"
