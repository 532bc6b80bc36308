"""One event as the text of one JSON object, the bytes `json.dumps` writes for
the schema's mapping (model/event_schema.py), without building that mapping.

Why: `trace --json` in a real storm prints every event, and the mapping (~5
µs) and the standard encoder (~3.5 µs) were two thirds of its cost per event
(docs/performance.md, issue 17). Here each shape of record (family, method,
verdict, fidelity masks, owner fidelity, address family, state, caller, reason,
memory class) gets one formatting function, generated once from the schema's
field order: what the shape fixes (names, enums, the fidelity map, nulls) is
literal text in it, and what changes per event (times, numbers) is read from
the record's flat values (events.FLAT_NAMES) into one f-string. The comm,
addresses and cgroup names are turned into JSON text once per value and kept.

event_schema.record() stays the reference: tests/test_jsonl.py compares the two
over varied records, and a family this module does not know goes through it.
"""
from __future__ import annotations

import json
from json import encoder as _encoder
from operator import attrgetter, itemgetter
from typing import Callable, Dict, List, Tuple

from tracer.model import events as ev
from tracer.model.clock import Clock
from tracer.model.event_schema import ABORT_ON_MEMORY, AF_NAMES, CALLER_NAMES, drop_reason_name, record
from tracer.model.events import FLAT_NAMES, Event

# json.dumps' string encoder (ensure_ascii, the default): the C one where built
_quote: Callable[[str], str] = (getattr(_encoder, "c_encode_basestring_ascii", None)
                                or _encoder.py_encode_basestring_ascii)
_MEMORY = (ev.OOM_CHECK, ev.MEM_EXCEED, ev.PRESSURE, ev.MEM_DROP)
_CACHE_MAX = 4096      # values kept per table; a table that fills is emptied (a damaged file)
I: Dict[str, int] = {name: i for i, name in enumerate(FLAT_NAMES)}
# what a shape is made of: the template depends on these values only
_SHAPE = ("family", "method", "verdict", "exact", "derived", "owner_fidelity", "af", "state",
          "caller", "reason", "mem_class")
_shape_of = itemgetter(*(I[n] for n in _SHAPE))
_values_of = attrgetter(*FLAT_NAMES)
_OWNER_IDS = (I["owner_cgroup"], I["sk_cgroup"], I["cgroup"], I["memcg"])


def _value(v) -> str:
    """One schema value as json.dumps writes it (None, bool, int, str, list, dict)."""
    return json.dumps(v)


def _fidelity_text(items) -> str:
    return "{" + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in items) + "}"


class _Template:
    """The source of one shape's function: literal text and expressions over
    `t`, the record's flat values, in the schema's order (expressions are
    generated here from the schema's names, never from data)."""

    def __init__(self) -> None:
        self.parts: List[Tuple[bool, str]] = []    # (is an expression, text)
        self.prelude: List[str] = []

    def lit(self, text: str) -> None:
        self.parts.append((False, text))

    def expr(self, code: str) -> None:
        self.parts.append((True, code))

    def field(self, name: str) -> None:
        self.lit(f', "{name}": ')

    def const(self, name: str, value) -> None:
        self.field(name)
        self.lit(_value(value))

    def number(self, name: str, nullable: bool = True) -> None:
        """An int field; -1 is null where the reference's put() says so."""
        self.field(name)
        i = I[name]
        self.expr(f"NULL if t[{i}] == -1 else t[{i}]" if nullable else f"t[{i}]")

    def source(self) -> str:
        """One f-string: literal text joined once, each expression formatted in place."""
        segments, literal = [], ""
        for is_expr, text in self.parts + [(True, "")]:
            if not is_expr:
                literal += text
                continue
            if literal:
                segments.append("f" + repr(literal.replace("{", "{{").replace("}", "}}")))
                literal = ""
            if text:
                segments.append("f'{" + text + "}'")      # expressions hold no quotes
        body = "".join(f"    {line}\n" for line in self.prelude)
        return f"def fmt(t):\n{body}    return ({' '.join(segments)})\n"


class JsonLines:
    """json.dumps(event_schema.record(e, clock, sampled, names)) for one event
    after another, as text: `jl(event)`, or `jl.values(t)` for the flat values
    of a record (events.FRAMED_STRUCT.iter_unpack over a batch). `sampled` and
    `names` as for record()."""

    def __init__(self, clock: Clock, sampled, names=None) -> None:
        self.clock, self.sampled, self.names = clock, sampled, names
        self._shapes: Dict[tuple, Callable[[tuple], str]] = {}
        self._comms: Dict[bytes, str] = {}
        self._addrs: Dict[Tuple[int, bytes], str] = {}
        self._who: Dict[tuple, str] = {}        # (who_cgroup, memcg) -> text
        self._names_changes = None
        self._offset = clock.offset_ns
        self._second = None
        self._date_time = ""

    def __call__(self, e: Event) -> str:
        return self.values(_values_of(e))

    def values(self, t: tuple) -> str:
        fmt = self._shapes.get(_shape_of(t))
        if fmt is None:
            fmt = self._compile(t)
        return fmt(t)

    # ------------------------------------------------------------ per value
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

    def _owner(self, t: tuple) -> str:
        """cgroup, memcg, container as JSON text. With names, their answer for the
        event's ids is kept while the names learn nothing new (Names.changes) and
        only once every id was found: a cgroup found on a later scan is named from
        then on, as the reference does."""
        owner_cg, sk_cg, ctx_cg, memcg = t[_OWNER_IDS[0]], t[_OWNER_IDS[1]], t[_OWNER_IDS[2]], t[_OWNER_IDS[3]]
        ids = (owner_cg or sk_cg or ctx_cg, memcg)      # Event.who_cgroup
        names = self.names
        if names is None:
            text = self._who.get(ids)
            if text is None:
                text = self._who_text((f"cgroup:{ids[0]}" if ids[0] else None,
                                       f"cgroup:{ids[1]}" if ids[1] else None, None))
                self._who[ids] = text
            return text
        changes = getattr(names, "changes", None)
        if changes is not None:
            if changes != self._names_changes:
                self._who.clear()
                self._names_changes = changes
            text = self._who.get(ids)
            if text is not None:
                return text
        answer = names.who(Event(t))
        text = self._who_text(answer)
        if changes is not None and (answer[0] is not None or not ids[0]) \
                and (answer[1] is not None or not ids[1]):
            if len(self._who) >= _CACHE_MAX:
                self._who.clear()
            self._who[ids] = text
        return text

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

    def _orphans(self, ts_ns: int, o: int, mo: int) -> tuple:
        """oom_check's orphans and max_orphans as the reference writes them, where
        the kernel side could not read one: the sample nearest the event, and
        which of the shape's fidelity maps (0-3: orphans sampled * 2 + max sampled)."""
        so_v, sm_v = self.sampled.at(ts_ns)
        k = 0
        if o < 0 and so_v is not None:
            o, k = (so_v if type(so_v) is int else _value(so_v)), 2
        elif o == -1:
            o = "null"
        if mo < 0 and sm_v is not None:
            mo, k = (sm_v if type(sm_v) is int else _value(sm_v)), k + 1
        elif mo == -1:
            mo = "null"
        return o, mo, k

    # ------------------------------------------------------------ per shape
    def _compile(self, t: tuple) -> Callable[[tuple], str]:
        e = Event(t)
        if e.family not in ev.FAMILIES:
            def fmt(t: tuple) -> str:
                return json.dumps(record(Event(t), self.clock, self.sampled, self.names))
        else:
            scope = {"T": self._time, "C": self._comm, "A": self._addr, "W": self._owner,
                     "S": self._orphans, "NULL": "null"}
            exec(self._template(e, scope).source(), scope)     # noqa: S102 (generated from the schema)
            fmt = scope["fmt"]
        if len(self._shapes) >= _CACHE_MAX:
            self._shapes.clear()
        self._shapes[_shape_of(t)] = fmt
        return fmt

    @staticmethod
    def _template(e: Event, scope: dict) -> _Template:
        """The reference's record(), field by field, for this shape."""
        fam = e.family
        x = _Template()
        x.lit('{"time": "')
        x.expr(f"T(t[{I['ts_ns']}])")
        x.lit('"')
        x.number("ts_ns", False)
        x.const("family", e.family_name)
        x.const("method", e.method_name)
        for name in ("cpu", "pid", "tid"):
            x.number(name, False)
        x.field("comm")
        x.expr(f"C(t[{I['comm']}])")
        fidelity = []
        if e.owner_fidelity:
            x.number("owner_pid", False)
            x.field("owner_comm")
            x.expr(f"C(t[{I['owner_comm']}])")
            x.number("owner_uid", False)
            x.const("owner_fidelity", e.owner_fidelity_name)
            x.lit(", ")
            x.expr("W(t)")
            if e.af:
                x.number("sk_uid", False)
            else:
                x.const("sk_uid", None)
            fidelity.append(("owner", e.owner_fidelity_name))
        else:
            for name in ("owner_pid", "owner_comm", "owner_uid", "owner_fidelity", "cgroup",
                         "memcg", "container", "sk_uid"):
                x.const(name, None)
        x.number("netns", False)
        af = e.af
        if not af:
            for name in ("af", "local", "remote", "sport", "dport", "state"):
                x.const(name, None)
        else:
            x.const("af", AF_NAMES.get(af, f"af{af}"))
            for name, addr, port in (("local", "saddr", "sport"), ("remote", "daddr", "dport")):
                x.field(name)
                if af in (2, 10):
                    x.lit('"')
                    x.expr(f"A({af}, t[{I[addr]}])")
                    x.lit(":")
                    x.expr(f"t[{I[port]}]")
                    x.lit('"')
                else:
                    x.lit('"-"')
            x.number("sport", False)
            x.number("dport", False)
            x.const("state", e.state_name)
        x.const("verdict", e.verdict_names())
        oom, memory = fam == ev.OOM_CHECK, fam in _MEMORY
        drop = fam == ev.MEM_DROP
        rcvbuf_full = drop and bool(e.verdict & ev.VERDICT_DROP_RCVBUF)
        mem_class = fam in (ev.MEM_EXCEED, ev.MEM_DROP) and bool(e.derived & ev.FIELD_MEM_CLASS) \
            and not rcvbuf_full
        if memory:
            fidelity += [("memory_allocated", e.fidelity("memory_allocated")),
                         ("tcp_mem", e.fidelity("tcp_mem"))]
            i0, i1, i2 = I["tcp_mem0"], I["tcp_mem1"], I["tcp_mem2"]
            x.prelude.append(f"m = NULL if t[{i0}] < 0 else f'[{{t[{i0}]}}, {{t[{i1}]}}, {{t[{i2}]}}]'")
        if oom:
            x.const("caller", CALLER_NAMES.get(e.caller, "unknown"))
            x.number("shift")
            x.const("shift_is_lower_bound", bool(e.verdict & ev.VERDICT_SHIFT_MIN))
            io, imo = I["orphans"], I["max_orphans"]
            x.prelude += [f"o, mo, k = t[{io}], t[{imo}], 0",
                          "if o < 0 or mo < 0:",
                          f"    o, mo, k = S(t[{I['ts_ns']}], o, mo)"]
            x.field("orphans")
            x.expr("o")
            x.field("max_orphans")
            x.expr("mo")
        else:
            for name in ("caller", "shift", "shift_is_lower_bound", "orphans", "max_orphans"):
                x.const(name, None)
        if memory:
            x.number("memory_allocated")
            x.field("tcp_mem")
            x.expr("m")
        else:
            x.const("memory_allocated", None)
            x.const("tcp_mem", None)
        for name in ("wmem_queued", "rmem_alloc", "sndbuf", "rcvbuf"):
            if fam in (ev.MEM_EXCEED, ev.MEM_DROP) or (oom and name == "wmem_queued"):
                x.number(name)
            else:
                x.const(name, None)
        for name in ("tw_count", "max_tw_buckets"):
            if fam == ev.TW_OVERFLOW:
                x.number(name)
                fidelity.append((name, e.fidelity(name)))
            else:
                x.const(name, None)
        if fam == ev.PRESSURE:
            x.number("pressure_since")
            fidelity.append(("pressure_since", e.fidelity("pressure_since")))
        else:
            x.const("pressure_since", None)
        if oom:
            x.const("reset_sent", bool(e.verdict & ev.VERDICT_RESET))
            x.const("reason", ABORT_ON_MEMORY if e.reason else None)
        else:
            x.const("reset_sent", None)
            x.const("reason", drop_reason_name(e.verdict) if drop else None)
        if rcvbuf_full:
            x.const("mem_class", "rcvbuf")
            fidelity.append(("mem_class", "derived"))
            x.const("memcg_usage", None)
            x.const("memcg_limit", None)
        elif mem_class:
            x.const("mem_class", e.mem_class_name)
            fidelity.append(("mem_class", "derived"))
            x.number("memcg_usage")
            x.number("memcg_limit")
        else:
            for name in ("mem_class", "memcg_usage", "memcg_limit"):
                x.const(name, None)
        verdict = [("verdict", e.fidelity("verdict") if e.method != ev.SAMPLED else "sampled")]
        x.field("fidelity")
        if oom:
            # the reference's order: shift, orphans, max_orphans after tcp_mem; a
            # sampled figure keeps its place with "sampled"
            maps = []
            for so in (False, True):
                for sm in (False, True):
                    maps.append(_fidelity_text(
                        fidelity + [("shift", e.fidelity("shift")),
                                    ("orphans", "sampled" if so else e.fidelity("orphans")),
                                    ("max_orphans", "sampled" if sm else e.fidelity("max_orphans"))]
                        + verdict))
            scope["FIDELITY"] = tuple(maps)
            x.expr("FIDELITY[k]")
        else:
            x.lit(_fidelity_text(fidelity + verdict))
        x.lit("}")
        return x
