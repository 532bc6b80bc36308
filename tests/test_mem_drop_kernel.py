"""Received segments dropped for memory (mem_drop, skb:kfree_skb) counted exactly.

Each lab scenario drops segments for real in the lab's namespace; the tracer
(`tcpoom trace --netns`) must count what TCPRcvQDrop + TCPOFODrop + TCPBacklogDrop
of that namespace count, and each site what its own counter counts."""
import pytest

from scripts.counts_check import run_once

pytestmark = pytest.mark.kernel

RUNS = 20


def _row(r):
    return next(x for x in r["totals"]["families"] if x["family"] == "mem_drop")


def _exact(r) -> bool:
    return (r["returncode"] == 0 and r["lost"] == 0 and r["printed"] == r["seen"]
            and r["seen"] == r["kernel_delta"] == r["lab_delta"] and r["seen"] > 0)


def _sites_match(r) -> bool:
    return all(s["seen"] == s["kernel_delta"] for name, s in _row(r)["sites"].items()
               if name != "ofo_pruned")


def test_rcvbuf_drops_count_equals_the_namespace_counters_20_of_20(matrix, probes_plan):
    figures, bad = [], []
    for i in range(RUNS):
        r = run_once("rcvbuf_drops")
        figures.append(f"{r['seen']}/{r['kernel_delta']}")
        if not (_exact(r) and _sites_match(r)):
            bad.append((i, r["seen"], r["printed"], r["kernel_delta"], r["lab_delta"], r["lost"],
                        r["returncode"], r["stderr"][-300:]))
    assert not bad, f"rcvbuf_drops: {RUNS - len(bad)}/{RUNS} exact; seen/kernel {' '.join(figures)}; {bad[:3]}"
    # every drop: in order, at a full receive buffer (the advice is the reader,
    # not tcp_mem), on the socket that dropped it
    for e in r["events"]:
        assert e["verdict"] == ["rcvq", "rcvbuf_full"] and e["reason"] == "PROTO_MEM"
        assert e["mem_class"] == "rcvbuf" and e["rmem_alloc"] > e["rcvbuf"] and e["local"]
    matrix.check(probes_plan, "mem_drop",
                 "rcvbuf_drops: count = TcpExt TCPRcvQDrop+TCPOFODrop+TCPBacklogDrop 20/20, rcvq = "
                 "TCPRcvQDrop, every event printed, none lost; each at a full receive buffer",
                 fields=["verdict"], used=_row(r)["method"], figures=" ".join(figures[:3]) + " ...")


def test_tcp_mem_drops_are_refusals_and_each_site_equals_its_counter(matrix, probes_plan):
    r = run_once("tcp_mem_drops")
    assert _exact(r), (r["seen"], r["kernel_delta"], r["lab_delta"], r["stderr"][-300:])
    sites = _row(r)["sites"]
    assert _sites_match(r), sites
    assert sites["rcvq"]["seen"] > 0
    refused = [e for e in r["events"] if "rcvbuf_full" not in e["verdict"]]
    assert refused, "tcp_mem at its hard limit refuses charges below rcvbuf"
    for e in refused:
        assert e["mem_class"] in ("hard_limit", "fair_share", "memcg")
    assert any(e["memory_allocated"] > e["tcp_mem"][2] for e in refused)
    matrix.check(probes_plan, "mem_drop",
                 "tcp_mem_drops: rcvq = TCPRcvQDrop, ofo = TCPOFODrop; drops below rcvbuf classified "
                 "as refusals (hard_limit, fair_share or memcg)",
                 fields=["verdict"], used=_row(r)["method"],
                 figures=f"{r['seen']}/{r['kernel_delta']}")
