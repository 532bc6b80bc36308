"""The one schema of an event as the outside sees it: `trace --json`,
`replay --json`, `export` (JSON Lines and CSV). docs/events.md documents it
field by field; tests/test_event_schema.py checks that the document, JSONL and
CSV agree for every field of every family.

Every record has every field, in this order; a field a family does not have,
or the kernel side could not read, is null. Numbers the kernel uses as enums
or bitmasks are written as names.

CSV holds the same values, one column per field: null is an empty cell, a
boolean `true`/`false`, a list its items joined by `|`, a map its `key=value`
pairs joined by `|`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from . import events as ev
from .clock import Clock

# (name, type): type is one of int, str, bool, list[str], list[int], map[str]
FIELDS: List[Tuple[str, str]] = [
    ("time", "str"), ("ts_ns", "int"), ("family", "str"), ("method", "str"),
    ("cpu", "int"), ("pid", "int"), ("tid", "int"), ("comm", "str"),
    ("owner_pid", "int"), ("owner_comm", "str"), ("owner_uid", "int"), ("owner_fidelity", "str"),
    ("cgroup", "str"), ("memcg", "str"), ("container", "str"), ("sk_uid", "int"), ("netns", "int"),
    ("af", "str"), ("local", "str"), ("remote", "str"), ("sport", "int"), ("dport", "int"),
    ("state", "str"), ("verdict", "list[str]"), ("caller", "str"),
    ("shift", "int"), ("shift_is_lower_bound", "bool"), ("orphans", "int"), ("max_orphans", "int"),
    ("memory_allocated", "int"), ("tcp_mem", "list[int]"), ("wmem_queued", "int"),
    ("rmem_alloc", "int"), ("sndbuf", "int"), ("rcvbuf", "int"),
    ("tw_count", "int"), ("max_tw_buckets", "int"), ("pressure_since", "int"),
    ("reset_sent", "bool"), ("reason", "str"),
    ("mem_class", "str"), ("memcg_usage", "int"), ("memcg_limit", "int"), ("fidelity", "map[str]"),
]
NAMES = [name for name, _ in FIELDS]
TYPES = dict(FIELDS)

AF_NAMES = {2: "inet", 10: "inet6"}
# the only sk_rst_reason tcpoom's tcp_send_reset program passes on (6.12+)
ABORT_ON_MEMORY = "TCP_ABORT_ON_MEMORY"
CALLER_NAMES = {ev.CALLER_CLOSE: "close", ev.CALLER_TIMER: "timer"}      # else "unknown"

# which families carry which figures (the rest are null)
_MEMORY = (ev.OOM_CHECK, ev.MEM_EXCEED, ev.PRESSURE, ev.MEM_DROP)


def record(e: ev.Event, clock: Clock, sampled, names=None) -> Dict:
    """The event as one flat mapping of the schema. `names` (model.containers.Names)
    turns cgroup ids into paths and container names; without it they are
    written as `cgroup:ID`."""
    fam = e.family
    d: Dict = dict.fromkeys(NAMES)
    fidelity: Dict[str, str] = {}

    def put(name: str, value, field: Optional[str] = None) -> None:
        d[name] = None if value == -1 else value
        if field:
            fidelity[name] = e.fidelity(field)

    d.update(time=clock.iso(e.ts_ns), ts_ns=e.ts_ns, family=e.family_name, method=e.method_name,
             cpu=e.cpu, pid=e.pid, tid=e.tid, comm=e.comm_str or None, netns=e.netns,
             verdict=e.verdict_names())
    if e.owner_fidelity:
        d.update(owner_pid=e.owner_pid, owner_comm=e.owner_comm_str or None, owner_uid=e.owner_uid,
                 owner_fidelity=e.owner_fidelity_name, sk_uid=e.sk_uid if e.af else None)
        fidelity["owner"] = e.owner_fidelity_name
        if names is not None:
            d["cgroup"], d["memcg"], d["container"] = names.who(e)
        else:
            d["cgroup"] = f"cgroup:{e.who_cgroup}" if e.who_cgroup else None
            d["memcg"] = f"cgroup:{e.memcg}" if e.memcg else None
    if e.af:
        d.update(af=AF_NAMES.get(e.af, f"af{e.af}"), local=e.local, remote=e.remote,
                 sport=e.sport, dport=e.dport, state=e.state_name)
    if fam in _MEMORY:
        put("memory_allocated", e.memory_allocated, "memory_allocated")
        d["tcp_mem"] = list(e.tcp_mem) if e.tcp_mem0 >= 0 else None
        fidelity["tcp_mem"] = e.fidelity("tcp_mem")
    if fam == ev.OOM_CHECK:
        d["caller"] = CALLER_NAMES.get(e.caller, "unknown")
        put("shift", e.shift, "shift")
        d["shift_is_lower_bound"] = bool(e.verdict & ev.VERDICT_SHIFT_MIN)
        put("orphans", e.orphans, "orphans")
        put("max_orphans", e.max_orphans, "max_orphans")
        so, sm = sampled.at(e.ts_ns)
        if e.orphans < 0 and so is not None:
            d["orphans"], fidelity["orphans"] = so, "sampled"
        if e.max_orphans < 0 and sm is not None:
            d["max_orphans"], fidelity["max_orphans"] = sm, "sampled"
        d["reset_sent"] = bool(e.verdict & ev.VERDICT_RESET)
        d["reason"] = ABORT_ON_MEMORY if e.reason else None
        put("wmem_queued", e.wmem_queued)
    elif fam == ev.TW_OVERFLOW:
        put("tw_count", e.tw_count, "tw_count")
        put("max_tw_buckets", e.max_tw_buckets, "max_tw_buckets")
    elif fam == ev.MEM_EXCEED:
        for name in ("rmem_alloc", "rcvbuf", "wmem_queued", "sndbuf"):
            put(name, getattr(e, name))
        if e.derived & ev.FIELD_MEM_CLASS:
            d["mem_class"] = e.mem_class_name
            fidelity["mem_class"] = "derived"
            put("memcg_usage", e.memcg_usage)
            put("memcg_limit", e.memcg_limit)
    elif fam == ev.PRESSURE:
        put("pressure_since", e.pressure_since, "pressure_since")
    elif fam == ev.MEM_DROP:
        d["reason"] = drop_reason_name(e.verdict)
        for name in ("rmem_alloc", "rcvbuf", "wmem_queued", "sndbuf"):
            put(name, getattr(e, name))
        if e.verdict & ev.VERDICT_DROP_RCVBUF:
            d["mem_class"] = "rcvbuf"
            fidelity["mem_class"] = "derived"
        elif e.derived & ev.FIELD_MEM_CLASS:
            d["mem_class"] = e.mem_class_name
            fidelity["mem_class"] = "derived"
            put("memcg_usage", e.memcg_usage)
            put("memcg_limit", e.memcg_limit)
    fidelity["verdict"] = e.fidelity("verdict") if e.method != ev.SAMPLED else "sampled"
    d["fidelity"] = fidelity
    return d


def drop_reason_name(verdict: int) -> str:
    """mem_drop: the kernel's drop reason (SKB_DROP_REASON_ without its prefix)."""
    if verdict & ev.VERDICT_DROP_PRUNE:
        return "TCP_OFO_QUEUE_PRUNE"
    if verdict & ev.VERDICT_DROP_BACKLOG:
        return "SOCKET_BACKLOG"
    return "PROTO_MEM"


def csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    if isinstance(value, dict):
        return "|".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def csv_row(d: Dict) -> List[str]:
    return [csv_cell(d[name]) for name in NAMES]


def from_csv(name: str, cell: str):
    """A CSV cell back to its schema value (for readers and the tests)."""
    t = TYPES[name]
    if cell == "":
        return [] if t == "list[str]" else ({} if t == "map[str]" else None)
    if t == "int":
        return int(cell)
    if t == "bool":
        return cell == "true"
    if t == "list[str]":
        return cell.split("|")
    if t == "list[int]":
        return [int(v) for v in cell.split("|")]
    if t == "map[str]":
        return dict(kv.split("=", 1) for kv in cell.split("|"))
    return cell
