"""The report model: one JSON-able dict per host, built from an Aggregate.

Every reporter (terminal, Markdown, JSON, HTML) renders this dict and nothing
else; its keys are the documented, stable `--format json` output
(docs/report-json.md).
"""
from __future__ import annotations

import time

import ipaddress
import struct
from typing import Dict, List, Optional, Tuple

from . import diagnosis
from tracer.model.units import margin_text
from tracer.model import events as ev
from tracer.model.aggregate import Aggregate, comm_of, top_with_socket
from tracer.model.clock import Clock
from tracer.model.event_schema import CALLER_NAMES
from tracer.model.families import KERNEL_COUNTER, KERNEL_COUNTER_PARTS, summed_delta

SCHEMA = "tcpoom-report/1"


class WallClock:
    """The report's times: the one clock model (clock.py) to the millisecond,
    every time clamped into the recording (a per-second bucket or an episode
    is whole seconds of CLOCK_MONOTONIC, which start before the first record
    and end after the last)."""

    def __init__(self, header: dict, start_ns: Optional[int] = None, end_ns: Optional[int] = None):
        self.clock = Clock.of(header)
        self.start_ns, self.end_ns = start_ns, end_ns

    def iso(self, ts_ns: Optional[int]) -> Optional[str]:
        if ts_ns is None:
            return None
        if self.start_ns is not None:
            ts_ns = max(ts_ns, self.start_ns)
        if self.end_ns is not None:
            ts_ns = min(ts_ns, self.end_ns)
        return self.clock.iso(ts_ns, "milliseconds")


def recording_span(agg: Aggregate) -> Tuple[Optional[int], Optional[int]]:
    """(first, last) CLOCK_MONOTONIC ns of what the recording holds: events,
    /proc snapshots and the trailer's stop time."""
    starts = [t for t in (agg.first_ns, agg.snap_first_ns) if t is not None]
    ends = [t for t in (agg.last_ns, agg.snap_last_ns, (agg.trailer or {}).get("ts_ns")) if t]
    return (min(starts) if starts else None), (max(ends) if ends else None)


def _peer(af: int, raw: bytes) -> str:
    try:
        return str(ipaddress.ip_address(raw[:4] if af == 2 else raw))
    except ValueError:
        return "?"


def _intervals(seconds: List[int]) -> List[List[int]]:
    """Runs of consecutive seconds: [[first, last], ...]."""
    out: List[List[int]] = []
    for s in sorted(set(seconds)):
        if out and s <= out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def _memory_margin(agg: Aggregate) -> Optional[dict]:
    m = agg.header.get("pcpu_margin")
    if not isinstance(m, dict) or not m.get("pages"):
        return None
    page = agg.header.get("page_size", 4096)
    return {"pages": m["pages"], "cpus": m.get("cpus"), "rsv_pages": m.get("rsv_pages"),
            "text": margin_text(m, page)}


def _limits(agg: Aggregate) -> dict:
    lim = dict(agg.header.get("sysctls") or {})
    if agg.first_snapshot:
        lim.update(agg.first_snapshot.get("limits", {}))
    lim.setdefault("page_size", agg.header.get("page_size", 4096))
    return lim


def _crossed(agg: Aggregate, clock: WallClock) -> List[dict]:
    """Which limits were crossed, when and for how long: from the snapshots
    (once a second) and from the events themselves (each proves its limit)."""
    conds: Dict[str, List[int]] = {}
    events: Dict[str, int] = {}
    for sec, s in agg.snapshot_series.items():
        tm = s.get("tcp_mem") or [None, None, None]
        mem = s.get("mem")
        if mem is not None and tm[1] is not None and mem > tm[1]:
            conds.setdefault("tcp_mem pressure (tcp_mem[1])", []).append(sec)
        if mem is not None and tm[2] is not None and mem > tm[2]:
            conds.setdefault("tcp_mem hard limit (tcp_mem[2])", []).append(sec)
        if s.get("pressure"):
            conds.setdefault("tcp_mem pressure (tcp_mem[1])", []).append(sec)
        o, mo = s.get("orphan"), s.get("max_orphans")
        if o is not None and mo is not None and o > mo:
            conds.setdefault("tcp_max_orphans", []).append(sec)
        tw, mtw = s.get("tw"), s.get("max_tw")
        if tw is not None and mtw is not None and tw >= mtw:
            conds.setdefault("tcp_max_tw_buckets", []).append(sec)
    limit_of = {ev.MEM_EXCEED: "tcp_mem hard limit (tcp_mem[2])", ev.TW_OVERFLOW: "tcp_max_tw_buckets"}
    # refusals a memory cgroup made are not tcp_mem's (per second the classes are
    # not kept: the seconds of mem_exceed go to the limit that refused most)
    memcg_n = sum(n for (cls, _, _, derived), n in agg.mem_classes.items()
                  if derived & ev.FIELD_MEM_CLASS and cls == ev.MEM_CLASS_MEMCG)
    mem_n = agg.by_family.get(ev.MEM_EXCEED, 0)
    if memcg_n:
        memcg_label = "memory cgroup limit (memory.kmem.tcp / memory.max)"
        if memcg_n * 2 >= mem_n:
            limit_of[ev.MEM_EXCEED] = memcg_label
        events[memcg_label] = memcg_n
        events["tcp_mem hard limit (tcp_mem[2])"] = -memcg_n if memcg_n * 2 < mem_n else 0
    for (fam, sec), n in agg.per_second.items():
        if fam in limit_of:
            conds.setdefault(limit_of[fam], []).append(sec)
            if not (fam == ev.MEM_EXCEED and memcg_n and limit_of[fam] != "tcp_mem hard limit (tcp_mem[2])"):
                events[limit_of[fam]] = events.get(limit_of[fam], 0) + n
    for (fam, verdict), n in agg.by_verdict.items():
        if fam == ev.OOM_CHECK:
            if verdict & ev.VERDICT_ORPHANS:
                events["tcp_max_orphans"] = events.get("tcp_max_orphans", 0) + n
            if verdict & ev.VERDICT_MEMORY:
                events["tcp_mem hard limit (tcp_mem[2])"] = events.get("tcp_mem hard limit (tcp_mem[2])", 0) + n
    for (fam, sec), n in agg.per_second.items():
        if fam == ev.OOM_CHECK:
            conds.setdefault("tcp_max_orphans" if events.get("tcp_max_orphans") else
                             "tcp_mem hard limit (tcp_mem[2])", []).append(sec)
    out = []
    for limit, secs in conds.items():
        runs = _intervals(secs)
        out.append({
            "limit": limit,
            "first": clock.iso(runs[0][0] * 1_000_000_000),
            "last": clock.iso((runs[-1][1] + 1) * 1_000_000_000),
            "seconds": sum(b - a + 1 for a, b in runs),
            "episodes": len(runs),
            "events": events.get(limit, 0),
        })
    return sorted(out, key=lambda c: c["first"] or "")


def _limits_during(agg: Aggregate) -> dict:
    """The lowest limits in force in the seconds events happened: a limit may
    have been lowered for a moment (and be back by the time anyone looks)."""
    secs = {s for (_, s) in agg.per_second}
    out: Dict[str, int] = {}
    for sec in secs:
        fig = agg.snapshot_series.get(sec) or {}
        for key, val in (("tcp_max_orphans", fig.get("max_orphans")),
                         ("tcp_mem_high", (fig.get("tcp_mem") or [None] * 3)[2]),
                         ("tcp_max_tw_buckets", fig.get("max_tw"))):
            if val is not None and (key not in out or val < out[key]):
                out[key] = val
    return out


def _who(agg: Aggregate) -> Tuple[List[dict], List[dict]]:
    """Top owners (processes) and top cgroups/containers, with counts per family."""
    owners = [{"pid": pid, "comm": comm_of(c0, c1), "events": n}
              for (pid, c0, c1), n in agg.owners.most_common(agg.TOP) if pid]
    groups: Dict[Tuple, dict] = {}
    for (fam, owner_cg, memcg), n in agg.who_cgroups.items():
        if not owner_cg and not memcg:
            continue
        e = ev.Event.make(owner_cgroup=owner_cg, memcg=memcg, owner_fidelity=ev.OWNER_LAST_KNOWN)
        cg, mem, label = agg.names.who(e)
        if cg is None and owner_cg:
            cg = f"cgroup:{owner_cg}"
        key = (cg, mem)
        row = groups.setdefault(key, {"cgroup": cg, "memcg": mem, "container": label, "events": 0,
                                      "by_family": {}})
        row["events"] += n
        name = ev.FAMILIES.get(fam, str(fam))
        row["by_family"][name] = row["by_family"].get(name, 0) + n
    rows = sorted(groups.values(), key=lambda r: -r["events"])[:agg.TOP]
    # the root cgroup alone says nothing: keep it only when it is all there is
    if len(rows) > 1:
        rows = [r for r in rows if r["container"]] or rows
    return owners, rows


def _mem_classes(agg: Aggregate, page: int) -> dict:
    """mem_exceed by refusal class, and the memory cgroups that refused, with their limits."""
    classes: Dict[str, int] = {}
    memcgs: Dict[int, dict] = {}
    v1 = (agg.header.get("plan") or {}).get("config", {}).get("memcg_v1")
    for (cls, memcg, limit, derived), n in agg.mem_classes.items():
        name = ev.MEM_CLASSES.get(cls, "unknown") if derived & ev.FIELD_MEM_CLASS else "unclassified"
        classes[name] = classes.get(name, 0) + n
        if name == "memcg":
            row = memcgs.setdefault(memcg, {
                "memcg": agg.names.path("memory", memcg) or (f"cgroup:{memcg}" if memcg else None),
                "container": (agg.names.identity("memory", memcg) or {}).get("label"),
                "refusals": 0, "limit_pages": None,
                "limit_name": "memory.kmem.tcp.limit_in_bytes" if v1 else "memory.max"})
            row["refusals"] += n
            if limit is not None and limit >= 0:
                row["limit_pages"] = limit if row["limit_pages"] is None else min(row["limit_pages"], limit)
                row["limit_bytes"] = row["limit_pages"] * page
    return {"classes": classes,
            "memcgs": sorted(memcgs.values(), key=lambda r: -r["refusals"])}



def _incident(h: dict, trailer: Optional[dict]) -> Optional[dict]:
    """What froze a `tcpoom serve` incident file (None for other recordings):
    the first trigger, the limit it concerns, and every trigger that fired
    while the incident was recorded (from the trailer)."""
    inc = h.get("incident")
    if not isinstance(inc, dict):
        return None
    at = inc.get("at_realtime_ns")
    out = {"trigger": inc.get("trigger"), "limit": inc.get("limit"),
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1e9)) if isinstance(at, int) else None,
           "before_s": inc.get("before_s"), "after_s": inc.get("after_s")}
    done = (trailer or {}).get("incident") or {}
    triggers = done.get("triggers")
    out["triggers"] = triggers if isinstance(triggers, list) else [inc.get("trigger")]
    # the trailer's word is later: a refusal's class is known once its records were read
    limits = done.get("limits") if isinstance(done.get("limits"), dict) else {}
    if limits.get(out["trigger"]):
        out["limit"] = limits[out["trigger"]]
    return out


def _drop_causes(agg: Aggregate) -> dict:
    """mem_drop by site and by cause: a full receive buffer, or the class of the refusal."""
    sites: Dict[str, int] = {}
    causes: Dict[str, int] = {}
    for (verdict, cls, derived), n in agg.drop_causes.items():
        site = ev.drop_site(verdict)
        sites[site] = sites.get(site, 0) + n
        if verdict & ev.VERDICT_DROP_RCVBUF:
            cause = "rcvbuf"
        elif derived & ev.FIELD_MEM_CLASS:
            cause = ev.MEM_CLASSES.get(cls, "unknown")
        else:
            cause = "unclassified"      # before 6.11: no socket at the drop
        if site != "ofo_pruned":
            causes[cause] = causes.get(cause, 0) + n
    return {"sites": sites, "causes": causes}


def build(agg: Aggregate, files: List[str]) -> dict:
    h = agg.header
    start_ns, end_ns = recording_span(agg)
    clock = WallClock(h, start_ns, end_ns)
    lim = _limits(agg)
    page = lim.get("page_size", 4096)
    fam_name = ev.FAMILIES
    by_family = {fam_name.get(f, str(f)): n for f, n in sorted(agg.by_family.items())}
    verdicts: Dict[str, Dict[str, int]] = {}
    for (f, v), n in agg.by_verdict.items():
        e = ev.Event.make(family=f, verdict=v)
        for name in e.verdict_names() or ["?"]:
            verdicts.setdefault(fam_name.get(f, str(f)), {}).setdefault(name, 0)
            verdicts[fam_name.get(f, str(f))][name] += n
    # in-kernel totals against the kernel's counters, over the recording
    tcpext_delta: Dict[str, int] = {}
    series = agg.snapshot_series
    if agg.tcpext_first is not None and agg.tcpext_last is not agg.tcpext_first:
        first, last = agg.tcpext_first, agg.tcpext_last
        tcpext_delta = {k: last[k] - first.get(k, 0) for k in last
                        if k in KERNEL_COUNTER_PARTS or k in (
                            "TCPMemoryPressuresChrono", "PruneCalled", "OfoPruned")}
    trailer_totals = (agg.trailer or {}).get("totals") or {}
    if trailer_totals.get("tcpext_delta"):
        tcpext_delta = trailer_totals["tcpext_delta"]     # the exact interval of the capture
    comparison = {}
    for name, counter in KERNEL_COUNTER.items():
        if counter and name in h.get("families", []):
            fam_id = ev.FAMILY_IDS[name]
            n = agg.pressure_entries() if fam_id == ev.PRESSURE else agg.by_family.get(fam_id, 0)
            if fam_id == ev.MEM_DROP:       # pruned skbs: no per-skb counter to compare with
                n -= sum(k for (f, v), k in agg.by_verdict.items()
                         if f == fam_id and v & ev.VERDICT_DROP_PRUNE)
            comparison[name] = {"events": n, "kernel_counter": counter,
                                "kernel_delta": summed_delta(counter, tcpext_delta.get)}
    if trailer_totals.get("families"):
        for row in trailer_totals["families"]:
            if row["family"] in comparison:
                comparison[row["family"]]["in_kernel_count"] = row["seen"]
    # per-second series, aligned on one start
    secs = [s for (_, s) in agg.per_second] + list(series)
    t0 = min(secs) if secs else 0
    t1 = max(secs) if secs else 0
    span_s = t1 - t0 + 1 if secs else 0
    fam_series = {name: [0] * span_s for name in by_family} if span_s else {}
    for (f, s), n in agg.per_second.items():
        fam_series[fam_name.get(f, str(f))][s - t0] += n
    snap_series = {k: [None] * span_s for k in ("mem", "orphan", "tw", "inuse")} if span_s else {}
    for s, fig in series.items():
        for k in snap_series:
            snap_series[k][s - t0] = fig.get(k)
    # the orphan penalty where the kernel side could not read the count: the
    # orphan count and limit sampled in the same second as each decision
    if agg.peaks["orphans_shifted"].value is None:
        for sec, shift in agg.oom_shift_by_sec.items():
            fig = series.get(sec) or {}
            if fig.get("orphan") is not None and shift >= 0:
                agg.peaks["orphans_shifted"].offer(fig["orphan"] << shift, sec * 10 ** 9, shift=shift,
                                                   orphans=fig["orphan"], max_orphans=fig.get("max_orphans"),
                                                   source="sampled")
    during = _limits_during(agg)
    owners, cgroup_rows = _who(agg)
    # TIME_WAIT: the figures read at the overflows themselves, else the samples
    tw_peak = agg.peaks.pop("tw_sampled")
    if agg.peaks["tw"].value is None:
        agg.peaks["tw"] = tw_peak
    elif agg.peaks["tw"].extra.get("limit") is not None:
        # read at the overflow itself: the limit in force then
        during["tcp_max_tw_buckets"] = min(during.get("tcp_max_tw_buckets", 1 << 62),
                                           agg.peaks["tw"].extra["limit"])
    peaks = {}
    for k, p in agg.peaks.items():
        if p.value is None:
            continue
        d = {"value": p.value, "at": clock.iso(p.ts_ns), **p.extra}
        if k == "memory_pages":
            d["bytes"] = p.value * page
            # against the hard limit in force at that moment (read with the event)
            high = p.extra.get("tcp_mem2") or -1
            if high <= 0:           # the event could not read it: the limit at the start
                high = (lim.get("tcp_mem") or [0, 0, 0])[2]
            d["pct_of_high"] = round(100.0 * p.value / high, 1) if high else None
            d["tcp_mem2"] = high            # the one the percentage is of
        elif k == "orphans":
            # against tcp_max_orphans in force at that moment: read with the
            # event, else sampled in the same second, else the one at the start
            limit = p.extra.get("limit")
            if limit is None or limit < 0:
                limit = (series.get(p.ts_ns // 10 ** 9) or {}).get("max_orphans")
            d["limit"] = limit if limit is not None else lim.get("tcp_max_orphans")
        peaks[k] = d
    model = {
        "schema": SCHEMA,
        "source": {"files": files, "hostname": h.get("hostname"), "kernel": h.get("kernel"),
                   "engine": h.get("engine"), "cmdline": h.get("cmdline"),
                   "damage": agg.damage, "complete": agg.trailer is not None and not agg.damage,
                   "incident": _incident(h, agg.trailer)},
        "span": {"start": clock.iso(start_ns), "end": clock.iso(end_ns),
                 "seconds": round((end_ns - start_ns) / 1e9, 1) if start_ns is not None else 0},
        "plan": {f: {"method": p["method"], "target": p["target"],
                     "fields": {k: v["fidelity"] for k, v in p["fields"].items()},
                     "blind_spot": p.get("blind_spot", "")}
                 for f, p in (h.get("plan") or {}).get("families", {}).items()},
        "limits": lim,
        "limits_during_events": during,
        "events": {"total": agg.events, "by_family": by_family, "by_verdict": verdicts,
                   "oom_callers": {CALLER_NAMES.get(k, "unknown"): n for k, n in agg.oom_callers.items()}},
        "kernel_counters": {"tcpext_delta": tcpext_delta, "comparison": comparison},
        "loss": dict(agg.loss),
        # 6.0+: sockstat mem and memory_allocated leave out up to this many pages
        # kept in per-CPU reserves (the recording's header; None: exact, or unknown)
        "memory_margin": _memory_margin(agg),
        "missed": dict(agg.missed),
        "crossed": _crossed(agg, clock),
        "peaks": peaks,
        "series": {"t0": clock.iso(t0 * 10 ** 9) if secs else None, "interval_s": 1,
                   "events": fam_series, "proc": snap_series},
        "distributions": {"shift": {str(k): n for k, n in sorted(agg.shift.items()) if k >= 0},
                          "orphans_at_decision": {str(k): n for k, n in sorted(agg.orphans_at_decision.items())}},
        "mem_exceed": _mem_classes(agg, page),
        **({"mem_drop": _drop_causes(agg)} if agg.by_family.get(ev.MEM_DROP) else {}),
        "top": {
            # the sockets' owners; recordings made before owners were traced: the context
            "processes": owners or [{"pid": pid, "comm": comm_of(c0, c1), "events": n}
                                    for (pid, c0, c1), n in agg.processes.most_common(agg.TOP)],
            "processes_are": "owners" if owners else "contexts",
            "contexts": [{"pid": pid, "comm": comm_of(c0, c1), "events": n}
                         for (pid, c0, c1), n in agg.processes.most_common(agg.TOP)],
            "cgroups": cgroup_rows,
            "local_ports": [{"port": p, "events": n} for p, n in top_with_socket(agg.local_ports)],
            "remote_peers": [{"peer": _peer(af, struct.pack("<QQ", d0, d1)), "events": n}
                             for (af, d0, d1), n in top_with_socket(agg.remote_peers)],
            "netns": [{"netns": ns, "events": n} for ns, n in agg.netns.most_common(agg.TOP)],
        },
        "holders": {
            "snapshots": len(agg.holders),
            "processes": [{"comm": comm, "pids": list(pids), "max_bytes": b}
                          for (comm, pids), b in agg.holder_processes.most_common(agg.TOP)],
            "latest": (agg.holders[-1].get("top", [])[:agg.TOP] if agg.holders else []),
        },
    }
    model["diagnosis"], model["sysctl_snippet"] = diagnosis.diagnose(model, h)
    return model
