"""End-of-trace totals: in-kernel counts against the kernel's own TcpExt counters."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from tracer.model import events as ev
from tracer.kernel.plan import Plan
from tracer.model.families import FAMILY_ORDER, FAMILY_SLOT, KERNEL_COUNTER, KERNEL_COUNTER_PARTS, summed_delta

#: other TcpExt counters worth showing when they move
CONTEXT_COUNTERS = ("TCPMemoryPressuresChrono", "PruneCalled", "RcvPruned", "OfoPruned",
                    "TCPRcvQDrop", "TCPOFODrop", "TCPBacklogDrop", "TCPZeroWindowDrop")


@dataclasses.dataclass
class Totals:
    plan: Plan
    families: List[str]
    duration_s: float
    counters: List[int]                      # in-kernel slots, summed over CPUs
    received: Dict[str, int]                 # records read from the ring buffer
    sampled: Dict[str, int]                  # events made in user space (sampled methods)
    tcpext_before: Dict[str, int]
    tcpext_after: Dict[str, int]
    netns: Optional[int] = None              # whose TcpExt counters these are
    stop_reason: str = ""
    #: calls the kernel recorded as missed by tcpoom's programs (recursion
    #: misses, kprobe missed): uncounted, so they explain a count below the
    #: kernel's; None where this kernel does not count them
    missed: Dict[str, Optional[int]] = dataclasses.field(default_factory=dict)
    missed_unmeasured: Dict[str, str] = dataclasses.field(default_factory=dict)
    tw_settled: int = 0                      # TIME_WAIT candidates confirmed by user space (< 5.10)
    tw_undecided: int = 0                    # ... still open at the stop: too young to decide
    netns_filtered: bool = True              # --netns given: the counts are that namespace's

    def delta(self, name: str) -> Optional[int]:
        """One TcpExt counter's delta, or the sum of a family's ("A+B")."""
        def one(n: str) -> Optional[int]:
            if n not in self.tcpext_after or n not in self.tcpext_before:
                return None
            return self.tcpext_after[n] - self.tcpext_before[n]
        return summed_delta(name, one)

    def seen(self, family: str) -> int:
        """Events caught: the in-kernel count, or the user-space count where sampled."""
        fp = self.plan.families[family]
        if fp.method == "sampled":
            return self.sampled.get(family, 0)
        if family == "tw_overflow":
            return self.counters[FAMILY_SLOT[family]] + self.tw_settled
        return self.counters[FAMILY_SLOT[family]]

    def tw_inference(self) -> Optional[dict]:
        """How the tracepoint tier's TIME_WAIT candidates ended."""
        if "tw_overflow" not in self.families or \
                self.plan.families["tw_overflow"].method not in ("tp_btf", "raw_tp"):
            return None
        c = self.counters
        return {"candidates": c[ev.CNT_TW_CANDIDATES], "cancelled": c[ev.CNT_TW_CANCELLED],
                "confirmed": self.seen("tw_overflow"), "confirmed_in_user_space": self.tw_settled,
                "confirmed_unchecked": c[ev.CNT_TW_UNCHECKED], "undecided": self.tw_undecided}

    def _reconcile(self, fam: str, row: dict, seen: int, delta: int) -> None:
        """Surplus or shortfall against the namespace's own counter, with what
        the kernel's other counters explain of it."""
        if seen > delta:
            row["surplus"] = seen - delta
            if not self.netns_filtered:
                row["surplus_why"] = ("seen counts every namespace, the kernel counter only "
                                      f"netns {self.netns}'s: trace with --netns to compare one")
            elif fam == "tw_overflow" and fp_inferred(self.plan, fam):
                failed = self.delta("TCPAbortFailed") or 0
                row["surplus_explained"] = min(row["surplus"], failed)
                row["surplus_why"] = (f"TCPAbortFailed +{failed}: an abort whose reset could not be "
                                      "allocated looks like an overflow at the tracepoints"
                                      if failed else "unexplained")
            else:
                row["surplus_why"] = "unexplained"

    def drop_sites(self) -> Optional[dict]:
        """mem_drop by site, each against the TcpExt counter the kernel bumps
        next to that drop (tcp_input.c/tcp_ipv4.c 5.19-6.18): one for one, but
        for pruned skbs (OfoPruned counts the prune calls)."""
        if "mem_drop" not in self.families or self.plan.families["mem_drop"].method == "sampled":
            return None
        c = self.counters
        sites = {"rcvq": (c[ev.CNT_DROP_RCVQ], "TCPRcvQDrop"), "ofo": (c[ev.CNT_DROP_OFO], "TCPOFODrop"),
                 "backlog": (c[ev.CNT_DROP_BACKLOG], "TCPBacklogDrop")}
        out = {name: {"seen": n, "kernel_counter": k, "kernel_delta": self.delta(k)}
               for name, (n, k) in sites.items()}
        if c[ev.CNT_DROP_UNSPLIT]:
            # before 6.11: no socket, so no rcv_nxt to tell them apart
            out["rcvq_or_ofo"] = {"seen": c[ev.CNT_DROP_UNSPLIT], "kernel_counter": "TCPRcvQDrop+TCPOFODrop",
                                  "kernel_delta": self.delta("TCPRcvQDrop+TCPOFODrop")}
        out["ofo_pruned"] = {"seen": c[ev.CNT_DROP_PRUNE], "kernel_counter": "OfoPruned (calls)",
                             "kernel_delta": self.delta("OfoPruned")}
        return out

    def lost(self, family: str) -> int:
        return self.counters[ev.CNT_LOST_BASE + ev.FAMILY_IDS[family]]

    def unpaired(self, family: str) -> int:
        """kprobe tiers: an entry clobbered in its (task, CPU) slot, or a return
        without its entry: a call whose event was lost, counted in the kernel."""
        slot = ev.CNT_UNPAIRED_BASE + ev.FAMILY_IDS[family]
        return self.counters[slot] if slot < len(self.counters) else 0

    def missed_in_all(self, family: str) -> Optional[int]:
        """The kernel's miss counts plus the unpaired entries; None where
        neither is counted on this kernel."""
        kernel, unpaired = self.missed.get(family), self.unpaired(family)
        if kernel is None and not unpaired:
            return None
        return (kernel or 0) + unpaired

    def rows(self) -> List[dict]:
        out = []
        for fam in FAMILY_ORDER:
            if fam not in self.families:
                continue
            fp = self.plan.families[fam]
            name = KERNEL_COUNTER[fam]
            delta = self.delta(name) if name else None
            seen = self.seen(fam)
            row = {
                "family": fam, "method": f"{fp.method} {fp.target}", "seen": seen,
                "received": self.received.get(fam, 0),
                "lost": self.lost(fam), "missed": self.missed_in_all(fam),
                "kernel_counter": name, "kernel_delta": delta,
                "match": None if delta is None else seen == delta,
                "not_seen_individually": None,
            }
            if fam in self.missed_unmeasured:
                row["missed_unmeasured"] = self.missed_unmeasured[fam]
            if delta is not None and delta > seen and row["missed"] and delta - seen <= row["missed"]:
                # the probes missed them and the kernel said so: explained, not silent
                row["explained_by_misses"] = True
            if delta is not None and delta > seen:
                row["not_seen_individually"] = delta - seen
                row["blind_spot"] = fp.blind_spot or "events the method did not see"
            if delta is not None:
                self._reconcile(fam, row, seen, delta)
            if fam == "tw_overflow" and self.tw_inference() is not None:
                row["inference"] = self.tw_inference()
            if fam == "mem_drop" and self.drop_sites() is not None:
                row["sites"] = self.drop_sites()
            out.append(row)
        return out

    def verdicts(self) -> Dict[str, int]:
        c = self.counters
        return {ev.COUNTER_NAMES[i]: c[i] for i in range(ev.CNT_MAX)
                if i in ev.COUNTER_NAMES and not ev.CNT_LOST_BASE <= i < ev.CNT_LOST_END
                and not ev.CNT_UNPAIRED_BASE <= i < ev.CNT_UNPAIRED_END}

    def to_json(self) -> dict:
        context = {k: self.delta(k) for k in CONTEXT_COUNTERS if self.delta(k)}
        return {
            "type": "totals",
            "duration_s": round(self.duration_s, 3),
            "stop_reason": self.stop_reason,
            "netns": self.netns,
            "families": self.rows(),
            "counters": self.verdicts(),
            "lost": {f: self.lost(f) for f in self.families},
            "missed": {f: self.missed_in_all(f) for f in self.families
                       if f in self.missed or self.unpaired(f)},
            "filtered": self.counters[ev.CNT_FILTERED],
            "tcpext_delta": {k: self.delta(k) for k in
                             list(dict.fromkeys(list(KERNEL_COUNTER_PARTS) + list(context)))},
        }

    def text(self) -> str:
        return text_from_json(self.to_json())


def fp_inferred(plan: Plan, family: str) -> bool:
    return plan.families[family].method in ("tp_btf", "raw_tp")


STOP_REASONS = {"SIGINT": "SIGINT: Ctrl-C", "SIGTERM": "SIGTERM", "duration": "--duration reached",
                "count": "--count reached", "max-size": "--max-size reached", "error": "on an error"}


def ended(reason) -> str:
    return STOP_REASONS.get(reason, str(reason))


def text_from_json(t: dict, recorded: bool = False) -> str:
    """The totals as lines, from their JSON form (live captures and recordings'
    trailers). `recorded`: a replay says how the recording ended, not that
    it was itself stopped."""
    took = f"after {t.get('duration_s', 0):.1f} s; TcpExt of netns {t.get('netns')}"
    if recorded:
        lines = [f"tcpoom: end of the recording: the recorder stopped ({ended(t.get('stop_reason'))}) {took}"]
    else:
        lines = [f"tcpoom: stopped ({t.get('stop_reason')}) {took}"]
    lines.append(f"  {'family':<12} {'seen':>7} {'lost':>5} {'missed':>6}  {'kernel counter':<22} "
                 f"{'delta':>7}  method")
    unmeasured = []
    for r in t.get("families", []):
        kc = r["kernel_counter"] or "(none)"
        d = "-" if r["kernel_delta"] is None else str(r["kernel_delta"])
        mark = "" if r["match"] in (None, True) else \
            ("  <- the probes missed these (kernel's own miss counts)" if r.get("explained_by_misses")
             else "  <- differs")
        missed = r.get("missed")
        m = "-" if missed is None else str(missed)
        lines.append(f"  {r['family']:<12} {r['seen']:>7} {r['lost']:>5} {m:>6}  {kc:<22} {d:>7}  "
                     f"{r['method']}{mark}")
        if r.get("missed_unmeasured"):
            unmeasured.append(f"{r['family']}: {r['missed_unmeasured']}")
        if r.get("not_seen_individually"):
            lines.append(f"    {r['not_seen_individually']} counted by the kernel but not seen one by one: "
                         f"{r['blind_spot']}")
        if r.get("surplus"):
            lines.append(f"    {r['surplus']} more than the kernel counted: {r.get('surplus_why', 'unexplained')}")
        inf = r.get("inference")
        if inf:
            lines.append(f"    inferred at the close: {inf['candidates']} candidates, {inf['cancelled']} cancelled "
                         f"by a reset or an error on the socket, {inf['confirmed']} confirmed "
                         f"({inf['confirmed_in_user_space']} by user space, {inf['confirmed_unchecked']} "
                         f"at once: pending table full)" +
                         (f", {inf['undecided']} undecided at the stop" if inf["undecided"] else ""))
        for site, x in (r.get("sites") or {}).items():
            if x["seen"] or x["kernel_delta"]:
                d = "-" if x["kernel_delta"] is None else x["kernel_delta"]
                lines.append(f"    {site:<12} {x['seen']:>7}  {x['kernel_counter']:<22} {d:>7}")
    v = t.get("counters", {})
    if v.get("oom_check"):
        lines.append(f"  oom_check verdicts: too_many_orphans={v['oom_check.orphans']} "
                     f"out_of_memory={v['oom_check.memory']} close={v['oom_check.close']} "
                     f"timer={v['oom_check.timer']} reset={v['oom_check.reset']}")
    if v.get("mem_exceed"):
        lines.append(f"  mem_exceed sides: send={v['mem_exceed.send']} recv={v['mem_exceed.recv']}")
    ctx = [f"{k}+{d}" for k, d in t.get("tcpext_delta", {}).items()
           if d and k in CONTEXT_COUNTERS]
    if ctx:
        lines.append("  other TcpExt: " + " ".join(ctx))
    lines.append(f"  filtered out: {t.get('filtered', 0)}")
    if unmeasured:
        lines.append("  missed, not counted by this kernel: " + "; ".join(unmeasured))
    return "\n".join(lines)
