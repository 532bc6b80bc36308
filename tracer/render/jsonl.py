"""One event as the text of one JSON object, the bytes `json.dumps` writes for
the schema's mapping (model/event_schema.py), without building that mapping.

Why: `trace --json` in a real storm prints every event, and the mapping (~5
µs) and the standard encoder (~3.5 µs) were two thirds of its cost per event
(docs/performance.md, issue 17). Here the parts that take few values (family,
method, verdict, owner fidelity, state, caller, reason, the fidelity map; the
comm, addresses and cgroup names) are turned into JSON text once per value and
kept; what changes per event (times, numbers) goes into one f-string per family.

event_schema.record() stays the reference: tests/test_jsonl.py compares the two
over varied records, and a family this module does not know goes through it.
"""
from __future__ import annotations

import json
from json import encoder as _encoder
from typing import Callable, Dict, Tuple

from tracer.model import events as ev
from tracer.model.clock import Clock
from tracer.model.event_schema import ABORT_ON_MEMORY, AF_NAMES, CALLER_NAMES, record
from tracer.model.events import Event

# json.dumps' string encoder (ensure_ascii, the default): the C one where built
_quote: Callable[[str], str] = (getattr(_encoder, "c_encode_basestring_ascii", None)
                                or _encoder.py_encode_basestring_ascii)
_MEMORY = (ev.OOM_CHECK, ev.MEM_EXCEED, ev.PRESSURE)
_CACHE_MAX = 4096      # values kept per table; a table that fills is emptied (a damaged file)


def _value(v) -> str:
    """One schema value as json.dumps writes it (None, bool, int, str, list, dict)."""
    return json.dumps(v)


def _fidelity_text(items) -> str:
    return "{" + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in items) + "}"


class _Shape:
    """The JSON text of what one kind of record has in common: every field that
    depends only on the shape's key (see JsonLines._shape)."""

    __slots__ = ("head", "owner_fidelity", "af", "state", "verdict", "oom", "tail",
                 "fidelity", "fidelity_sampled")

    def __init__(self, e: Event) -> None:
        fam = e.family
        # "family", "method"
        self.head = f'"family": {_quote(e.family_name)}, "method": {_quote(e.method_name)}'
        self.owner_fidelity = _quote(e.owner_fidelity_name)
        self.af = _quote(AF_NAMES.get(e.af, f"af{e.af}"))
        self.state = _quote(e.state_name)
        self.verdict = _value(e.verdict_names())
        # caller .. shift_is_lower_bound, and reset_sent .. mem_class: constant per shape
        self.oom = self.tail = ""
        if fam == ev.OOM_CHECK:
            self.oom = (_quote(CALLER_NAMES.get(e.caller, "unknown")),
                        _value(bool(e.verdict & ev.VERDICT_SHIFT_MIN)))
            self.tail = (f'"reset_sent": {_value(bool(e.verdict & ev.VERDICT_RESET))}, '
                         f'"reason": {_value(ABORT_ON_MEMORY if e.reason else None)}')
        # the fidelity map in the reference's insertion order; for oom_check one text
        # per (orphans sampled, max_orphans sampled)
        base = []
        if e.owner_fidelity:
            base.append(("owner", e.owner_fidelity_name))
        if fam in _MEMORY:
            base += [("memory_allocated", e.fidelity("memory_allocated")),
                     ("tcp_mem", e.fidelity("tcp_mem"))]
        verdict = [("verdict", e.fidelity("verdict") if e.method != ev.SAMPLED else "sampled")]
        if fam == ev.OOM_CHECK:
            shift = [("shift", e.fidelity("shift"))]
            self.fidelity_sampled = {}
            for so in (False, True):
                for sm in (False, True):
                    o = [("orphans", "sampled" if so else e.fidelity("orphans")),
                         ("max_orphans", "sampled" if sm else e.fidelity("max_orphans"))]
                    self.fidelity_sampled[(so, sm)] = _fidelity_text(base + shift + o + verdict)
            self.fidelity = ""
        else:
            if fam == ev.TW_OVERFLOW:
                base += [("tw_count", e.fidelity("tw_count")),
                         ("max_tw_buckets", e.fidelity("max_tw_buckets"))]
            elif fam == ev.MEM_EXCEED and e.derived & ev.FIELD_MEM_CLASS:
                base.append(("mem_class", "derived"))
            elif fam == ev.PRESSURE:
                base.append(("pressure_since", e.fidelity("pressure_since")))
            self.fidelity = _fidelity_text(base + verdict)
            self.fidelity_sampled = None
        if fam == ev.MEM_EXCEED:
            self.tail = ('"mem_class": ' + (_quote(e.mem_class_name) if e.derived & ev.FIELD_MEM_CLASS
                                            else "null"))


class JsonLines:
    """json.dumps(event_schema.record(e, clock, sampled, names)) for one event
    after another, as text. `sampled` and `names` as for record()."""

    def __init__(self, clock: Clock, sampled, names=None) -> None:
        self.clock, self.sampled, self.names = clock, sampled, names
        self._shapes: Dict[tuple, _Shape] = {}
        self._comms: Dict[bytes, str] = {}
        self._addrs: Dict[Tuple[int, bytes], str] = {}
        self._who: Dict[tuple, str] = {}        # (who_cgroup, memcg) -> text
        self._names_changes = None
        self._offset = clock.offset_ns
        self._second = None
        self._date_time = ""

    # ------------------------------------------------------------ cached parts
    def _shape(self, e: Event) -> _Shape:
        key = (e.family, e.method, e.verdict, e.exact, e.derived, e.owner_fidelity, e.af,
               e.state, e.caller, e.reason, e.mem_class)
        s = self._shapes.get(key)
        if s is None:
            if len(self._shapes) >= _CACHE_MAX:
                self._shapes.clear()
            s = self._shapes[key] = _Shape(e)
        return s

    def _comm(self, raw: bytes) -> str:
        t = self._comms.get(raw)
        if t is None:
            s = raw.split(b"\0", 1)[0].decode(errors="replace")
            if len(self._comms) >= _CACHE_MAX:
                self._comms.clear()
            t = self._comms[raw] = _quote(s) if s else "null"
        return t

    def _addr(self, af: int, raw: bytes) -> str:
        """The endpoint's text before ":port" (IPv6 in brackets), as Event.local writes it."""
        t = self._addrs.get((af, raw))
        if t is None:
            probe = Event.make(af=af, saddr=raw, sport=0).local     # the reference's own text
            if len(self._addrs) >= _CACHE_MAX:
                self._addrs.clear()
            t = self._addrs[(af, raw)] = probe[:-2]                 # without ":0"
        return t

    def _owner(self, e: Event) -> str:
        """cgroup, memcg, container as JSON text. With names, their answer for the
        event's ids is kept while the names learn nothing new (Names.changes) and
        only once every id was found: a cgroup found on a later scan is named from
        then on, as the reference does."""
        ids = (e.who_cgroup, e.memcg)
        names = self.names
        if names is None:
            t = self._who.get(ids)
            if t is None:
                t = self._who_text((f"cgroup:{ids[0]}" if ids[0] else None,
                                    f"cgroup:{ids[1]}" if ids[1] else None, None))
                self._who[ids] = t
            return t
        changes = getattr(names, "changes", None)
        if changes is not None:
            if changes != self._names_changes:
                self._who.clear()
                self._names_changes = changes
            t = self._who.get(ids)
            if t is not None:
                return t
        answer = names.who(e)
        t = self._who_text(answer)
        if changes is not None and (answer[0] is not None or not ids[0]) \
                and (answer[1] is not None or not ids[1]):
            if len(self._who) >= _CACHE_MAX:
                self._who.clear()
            self._who[ids] = t
        return t

    @staticmethod
    def _who_text(answer) -> str:
        cg, mem, label = answer
        return f'"cgroup": {_value(cg)}, "memcg": {_value(mem)}, "container": {_value(label)}'

    def _time(self, ts_ns: int) -> str:
        """The clock's own text (Clock.iso), its date and time of day taken once a second."""
        sec, ns = divmod(ts_ns + self._offset, 1_000_000_000)
        if sec != self._second:
            self._second = sec
            self._date_time = self.clock.iso(ts_ns)[:-13]     # without ".uuuuuu+00:00"
        return f"{self._date_time}.{ns // 1000:06d}+00:00"

    # ------------------------------------------------------------ one event
    def __call__(self, e: Event) -> str:
        fam = e.family
        if fam not in ev.FAMILIES:
            return json.dumps(record(e, self.clock, self.sampled, self.names))
        s = self._shape(e)
        if e.owner_fidelity:
            owner = (f'"owner_pid": {e.owner_pid}, "owner_comm": {self._comm(e.owner_comm)}, '
                     f'"owner_uid": {e.owner_uid}, "owner_fidelity": {s.owner_fidelity}, '
                     f'{self._owner(e)}, "sk_uid": {e.sk_uid if e.af else "null"}')
        else:
            owner = ('"owner_pid": null, "owner_comm": null, "owner_uid": null, "owner_fidelity": null, '
                     '"cgroup": null, "memcg": null, "container": null, "sk_uid": null')
        af = e.af
        if not af:
            sock = '"af": null, "local": null, "remote": null, "sport": null, "dport": null, "state": null'
        elif af == 2 or af == 10:
            sock = (f'"af": {s.af}, "local": "{self._addr(af, e.saddr)}:{e.sport}", '
                    f'"remote": "{self._addr(af, e.daddr)}:{e.dport}", '
                    f'"sport": {e.sport}, "dport": {e.dport}, "state": {s.state}')
        else:
            sock = (f'"af": {s.af}, "local": "-", "remote": "-", '
                    f'"sport": {e.sport}, "dport": {e.dport}, "state": {s.state}')
        head = (f'{{"time": "{self._time(e.ts_ns)}", "ts_ns": {e.ts_ns}, {s.head}, '
                f'"cpu": {e.cpu}, "pid": {e.pid}, "tid": {e.tid}, "comm": {self._comm(e.comm)}, '
                f'{owner}, "netns": {e.netns}, {sock}, "verdict": {s.verdict}, ')
        if fam in _MEMORY:
            m = e.memory_allocated
            mem = (f'"memory_allocated": {"null" if m == -1 else m}, "tcp_mem": '
                   + (f'[{e.tcp_mem0}, {e.tcp_mem1}, {e.tcp_mem2}]' if e.tcp_mem0 >= 0 else "null"))
        if fam == ev.TW_OVERFLOW:
            c, mx = e.tw_count, e.max_tw_buckets
            return (f'{head}"caller": null, "shift": null, "shift_is_lower_bound": null, '
                    '"orphans": null, "max_orphans": null, "memory_allocated": null, "tcp_mem": null, '
                    '"wmem_queued": null, "rmem_alloc": null, "sndbuf": null, "rcvbuf": null, '
                    f'"tw_count": {"null" if c == -1 else c}, '
                    f'"max_tw_buckets": {"null" if mx == -1 else mx}, "pressure_since": null, '
                    '"reset_sent": null, "reason": null, "mem_class": null, "memcg_usage": null, '
                    f'"memcg_limit": null, "fidelity": {s.fidelity}}}')
        if fam == ev.OOM_CHECK:
            caller, lower = s.oom
            sh, o, mo, wq = e.shift, e.orphans, e.max_orphans, e.wmem_queued
            so = sm = False
            if o < 0 or mo < 0:
                so_v, sm_v = self.sampled.at(e.ts_ns)
                if o < 0 and so_v is not None:
                    o, so = _value(so_v), True
                if mo < 0 and sm_v is not None:
                    mo, sm = _value(sm_v), True
            return (f'{head}"caller": {caller}, "shift": {"null" if sh == -1 else sh}, '
                    f'"shift_is_lower_bound": {lower}, "orphans": {"null" if o == -1 else o}, '
                    f'"max_orphans": {"null" if mo == -1 else mo}, {mem}, '
                    f'"wmem_queued": {"null" if wq == -1 else wq}, "rmem_alloc": null, '
                    '"sndbuf": null, "rcvbuf": null, "tw_count": null, "max_tw_buckets": null, '
                    f'"pressure_since": null, {s.tail}, "mem_class": null, "memcg_usage": null, '
                    f'"memcg_limit": null, "fidelity": {s.fidelity_sampled[(so, sm)]}}}')
        if fam == ev.MEM_EXCEED:
            wq, ra, sb, rb = e.wmem_queued, e.rmem_alloc, e.sndbuf, e.rcvbuf
            if e.derived & ev.FIELD_MEM_CLASS:
                u, lim = e.memcg_usage, e.memcg_limit
                cls = (f'{s.tail}, "memcg_usage": {"null" if u == -1 else u}, '
                       f'"memcg_limit": {"null" if lim == -1 else lim}')
            else:
                cls = '"mem_class": null, "memcg_usage": null, "memcg_limit": null'
            return (f'{head}"caller": null, "shift": null, "shift_is_lower_bound": null, '
                    f'"orphans": null, "max_orphans": null, {mem}, '
                    f'"wmem_queued": {"null" if wq == -1 else wq}, '
                    f'"rmem_alloc": {"null" if ra == -1 else ra}, "sndbuf": {"null" if sb == -1 else sb}, '
                    f'"rcvbuf": {"null" if rb == -1 else rb}, "tw_count": null, "max_tw_buckets": null, '
                    f'"pressure_since": null, "reset_sent": null, "reason": null, {cls}, '
                    f'"fidelity": {s.fidelity}}}')
        ps = e.pressure_since         # PRESSURE
        return (f'{head}"caller": null, "shift": null, "shift_is_lower_bound": null, '
                f'"orphans": null, "max_orphans": null, {mem}, "wmem_queued": null, '
                '"rmem_alloc": null, "sndbuf": null, "rcvbuf": null, "tw_count": null, '
                f'"max_tw_buckets": null, "pressure_since": {"null" if ps == -1 else ps}, '
                '"reset_sent": null, "reason": null, "mem_class": null, "memcg_usage": null, '
                f'"memcg_limit": null, "fidelity": {s.fidelity}}}')
