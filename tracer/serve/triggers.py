"""When to freeze an incident: the first orphan kill, TIME_WAIT overflow or
refusal after a quiet spell, TCP entering memory pressure, or headroom
falling under a threshold. Checked once a second from the in-kernel counters
(when BPF is loaded) and the /proc snapshot (always: its TcpExt counters move
even where the plan has a blind spot)."""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

from tracer.model import events as ev

#: trigger -> (in-kernel counter slot, TcpExt counter): either moving fires it
COUNTED = {
    "orphan_kill": (ev.CNT_OOM_CHECK, "TCPAbortOnMemory"),
    "tw_overflow": (ev.CNT_TW_OVERFLOW, "TCPTimeWaitOverflow"),
    "refusal": (ev.CNT_MEM_EXCEED, None),
    "pressure": (ev.CNT_PRESSURE_ENTER, "TCPMemoryPressures"),
}

#: the limit each trigger concerns, named in the incident and its reports
LIMITS = {"pressure": "tcp_mem[1]", "orphan_kill": "tcp_max_orphans or tcp_mem[2]",
          "tw_overflow": "tcp_max_tw_buckets", "refusal": "tcp_mem[2] or the cgroup's memory limit"}
#: a refusal's limit by its class (bpf/mem_class.bpf.h)
CLASS_LIMITS = {"hard_limit": "tcp_mem[2]",
                "fair_share": "tcp_mem[1] (a socket above its fair share under pressure)",
                "memcg": "the cgroup's memory limit (memory.max or memory.kmem.tcp.limit_in_bytes)"}


def headroom_low(snap: dict, fraction: float) -> Optional[str]:
    """Which limit has less than `fraction` of it left, if any."""
    tcp = (snap.get("sockstat") or {}).get("TCP", {})
    lim = snap.get("limits") or {}
    checks = (("tcp_mem[2]", tcp.get("mem"), (lim.get("tcp_mem") or [0, 0, 0])[2]),
              ("tcp_max_orphans", tcp.get("orphan"), lim.get("tcp_max_orphans")),
              ("tcp_max_tw_buckets", tcp.get("tw"), lim.get("tcp_max_tw_buckets")))
    for name, value, limit in checks:
        if value is not None and limit and value >= (1 - fraction) * limit:
            return name
    return None


class Triggers:
    def __init__(self, enabled: Sequence[str], headroom: float, rearm_s: float = 300.0):
        self.enabled = set(enabled)
        self.headroom = headroom
        self.rearm_s = rearm_s
        self._last: Dict[str, int] = {}
        self._moved_at: Dict[str, float] = {}
        self._pressure: Optional[bool] = None
        self._low: Optional[str] = None
        self.why: Dict[str, str] = {}
        self._classes: Dict[str, int] = {}

    def _rose(self, key: str, value: Optional[int]) -> bool:
        if value is None:
            return False
        before = self._last.get(key)
        self._last[key] = value
        return before is not None and value > before

    def check(self, counters: Optional[List[int]], snap: dict, now: Optional[float] = None,
              classes: Optional[Dict[str, int]] = None) -> List[str]:
        """The triggers that fire now. `classes`: the running refusal counts by class
        (from the events): a new hard_limit refusal is memory_allocated past tcp_mem[2]
        at that moment, which a snapshot a second apart can miss entirely (a spike, or
        tcp_mem set low for less than a second)."""
        now = time.monotonic() if now is None else now
        fired = []
        ext = snap.get("tcpext") or {}
        for name, (slot, tcpext) in COUNTED.items():
            rose = self._rose(f"bpf.{name}", counters[slot] if counters is not None else None)
            rose = self._rose(f"ext.{name}", ext.get(tcpext) if tcpext else None) or rose
            if not rose:
                continue
            quiet = now - self._moved_at.get(name, -1e18) >= self.rearm_s
            self._moved_at[name] = now
            if quiet and name in self.enabled:
                fired.append(name)
        # the flag itself: a pressure spell shorter than the counters' view still shows
        press = snap.get("pressure")
        if press and self._pressure is False and "pressure" in self.enabled and "pressure" not in fired:
            if now - self._moved_at.get("pressure.flag", -1e18) >= self.rearm_s:
                fired.append("pressure")
            self._moved_at["pressure.flag"] = now
        if press is not None:
            self._pressure = bool(press)
        low = headroom_low(snap, self.headroom) if "headroom" in self.enabled else None
        hard = (classes or {}).get("hard_limit")
        if self._rose("events.hard_limit", hard) and "headroom" in self.enabled:
            low = "tcp_mem[2]"
        if low and low != self._low:
            fired.append("headroom")
            self.why["headroom"] = low
        self._low = low
        return fired

    def mark(self, classes: Dict[str, int]) -> None:
        """Refusals by class when an incident starts: limit() counts from here."""
        self._classes = dict(classes)

    def limit(self, reason: str, classes: Optional[Dict[str, int]] = None) -> Optional[str]:
        """The limit an incident of `reason` concerns: for headroom the one
        found low, for a refusal the class most refusals had since mark()
        (`classes`: the running counts by class, from the ring, which lags the
        in-kernel counter that fired the trigger: ask when the incident ends)."""
        if reason == "headroom":
            return self.why.get("headroom")
        if reason == "refusal" and classes:
            moved = {c: n - self._classes.get(c, 0) for c, n in classes.items()}
            top = max(sorted(moved), key=lambda c: moved[c])
            if moved[top] > 0 and top in CLASS_LIMITS:
                return CLASS_LIMITS[top]
        return LIMITS.get(reason)
