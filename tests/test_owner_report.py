"""Reports from records that carry owners and refusal classes (no kernel needed):
which service or container, the owner rather than the interrupted task, and
memory-cgroup refusals advised on the cgroup's limit, not on tcp_mem."""
from __future__ import annotations

from tracer.analysis import report
from tracer.model import events as ev
from tracer.model.aggregate import Aggregate

CID = "4f5c1a2b" * 8
HEADER = {"families": ["mem_exceed", "oom_check"], "plan": {"config": {"memcg_v1": 1}, "families": {}},
          "sysctls": {"tcp_mem": [1000, 2000, 4000]}, "page_size": 4096}
NAMES = {"mode": "hybrid", "ids": {
    "v2": {"11": {"path": "/system.slice/docker-%s.scope" % CID, "label": "docker:" + CID[:12],
                  "container": CID, "runtime": "docker"}},
    "memory": {"22": {"path": "/system.slice/docker-%s.scope" % CID, "label": "docker:" + CID[:12]}}}}


def _refusal(i, cls, **kw):
    fields = dict(ts_ns=10 ** 9 + i, family=ev.MEM_EXCEED, method=ev.TP_BTF, pid=0, comm=b"swapper/1",
                  owner_pid=4242, owner_comm=b"reader", owner_fidelity=ev.OWNER_LAST_KNOWN,
                  owner_cgroup=11, sk_cgroup=11, memcg=22, verdict=ev.VERDICT_RECV, af=2,
                  memory_allocated=50, tcp_mem=(1000, 2000, 4000), mem_class=cls,
                  derived=ev.FIELD_MEM_CLASS, memcg_usage=512, memcg_limit=512)
    fields.update(kw)
    return ev.Event.make(**fields)


def _model(records):
    agg = Aggregate(HEADER)
    agg.names.learn(NAMES)
    agg.add_events(ev.frame_all([e.pack() for e in records]), len(records))
    return report.build(agg, ["x.tcpoom"])


def test_memcg_refusals_name_the_cgroup_and_its_limit_and_do_not_advise_tcp_mem():
    m = _model([_refusal(i, ev.MEM_CLASS_MEMCG) for i in range(30)])
    assert m["mem_exceed"]["classes"] == {"memcg": 30}
    f = next(x for x in m["diagnosis"] if x["id"] == "mem_exceed.memcg")
    assert f["limit"] == "memory.kmem.tcp.limit_in_bytes of /system.slice/docker-%s.scope" % CID
    assert "2.0 MiB" in " ".join(f["evidence"])
    assert "docker:" + CID[:12] in f["title"]
    assert not any(x["id"] == "tcp_mem" for x in m["diagnosis"])
    assert "tcp_mem" not in m["sysctl_snippet"]


def test_hard_limit_refusals_still_advise_tcp_mem():
    m = _model([_refusal(i, ev.MEM_CLASS_HARD, memory_allocated=5000, memcg=0) for i in range(5)]
               + [_refusal(10 + i, ev.MEM_CLASS_MEMCG) for i in range(3)])
    ids = [x["id"] for x in m["diagnosis"]]
    assert "tcp_mem" in ids and "mem_exceed.memcg" in ids
    tcp = next(x for x in m["diagnosis"] if x["id"] == "tcp_mem")
    assert tcp["title"].startswith("TCP memory at the hard limit: 5 ")


def test_top_processes_are_the_owners_and_containers_are_listed():
    m = _model([_refusal(i, ev.MEM_CLASS_MEMCG) for i in range(7)])
    top = m["top"]
    assert top["processes_are"] == "owners"
    assert top["processes"][0] == {"pid": 4242, "comm": "reader", "events": 7}
    assert top["contexts"][0]["comm"] == "swapper/1"
    row = top["cgroups"][0]
    assert row["container"] == "docker:" + CID[:12] and row["by_family"] == {"mem_exceed": 7}
