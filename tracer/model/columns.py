"""Records read in columns: strided memoryview slices over a buffer of
back-to-back fixed-size records, so a million events aggregate without a
Python object per event per field (model/aggregate.py)."""
from __future__ import annotations

import struct
from collections import Counter
from itertools import compress, repeat
from typing import Dict, List, Optional, Tuple

from . import events as ev

_OFF = ev.layout_offsets()

_FMT = {"Q": "Q", "q": "q", "I": "I", "i": "i", "H": "H", "B": "B", "3q": "q", "16s": "Q"}
_CODE = {name: _FMT[code] for name, code in ev.LAYOUT}


class Columns:
    """The columns of one buffer of whole strides. A column that holds one
    value over the buffer (the usual case in a storm: one process, one
    namespace, one peer) is recognised from strided byte slices, which cost a
    few nanoseconds a record, and is then counted once instead of per record.
    With a mask, only the records whose mask byte is 1 are seen."""

    def __init__(self, records: bytes, count: int, stride: int, skip: int, mask: Optional[bytes] = None):
        self.records, self.count, self.stride, self.skip = records, count, stride, skip
        self.mask = mask
        self.n = count if mask is None else mask.count(1)
        self.second: Optional[int] = None     # the one second every record falls in, if so
        self._mv = memoryview(records)
        self._views: Dict[str, memoryview] = {}
        self._seen: Optional[list] = None     # with a mask: the places of the records seen
        self._consts: Dict[Tuple[str, int], Optional[int]] = {}

    def only(self, mask: bytes) -> "Columns":
        sub = Columns(self.records, self.count, self.stride, self.skip, mask)
        sub.second = self.second
        return sub

    def _off(self, name: str, extra: int) -> int:
        return self.skip + _OFF[name] + extra

    def col(self, name: str, extra: int = 0) -> list:
        fmt = _CODE[name]
        view = self._views.get(fmt)
        if view is None:
            view = self._views[fmt] = self._mv.cast(fmt)
        width = view.itemsize
        values = view[self._off(name, extra) // width::self.stride // width].tolist()
        if self.mask is None:
            return values
        return list(compress(values, self.mask))

    def at(self, name: str, i: int, extra: int = 0) -> int:
        """Field `name` of the i-th record seen."""
        if self.mask is not None:
            # the record's place in the buffer (a peak's other fields: no
            # masked copy of a whole column for one value)
            if self._seen is None:
                self._seen = list(compress(range(self.count), self.mask))
            i = self._seen[i]
        return struct.unpack_from("<" + _CODE[name], self.records,
                                  self._off(name, extra) + i * self.stride)[0]

    def const(self, name: str, extra: int = 0) -> Optional[int]:
        """The column's one value, or None when it varies."""
        try:
            return self._consts[name, extra]
        except KeyError:
            v = self._consts[name, extra] = self._const(name, extra)
            return v

    def _const(self, name: str, extra: int) -> Optional[int]:
        if self.mask is not None:
            values = self.col(name, extra)
            return values[0] if values.count(values[0]) == len(values) else None
        off = self._off(name, extra)
        fmt = _CODE[name]
        for k in range(struct.calcsize(fmt)):
            b = self.records[off + k::self.stride]
            if b.count(b[0]) != self.count:
                return None
        return struct.unpack_from("<" + fmt, self.records, off)[0]

    def part(self, name: str, extra: int = 0) -> Tuple[Optional[int], Optional[list]]:
        """(value, None) for a constant column, (None, values) otherwise."""
        v = self.const(name, extra)
        return (v, None) if v is not None else (None, self.col(name, extra))


    def pairs(self, first: str, second: str) -> Counter:
        """How many records have each (first, second) value pair, for two
        narrow fields (3 bytes or less together, such as family and verdict):
        both copied side by side into one 4-byte key per record (two strided
        copies in C) and the keys counted as ints, then the few distinct keys
        decoded. The pairs come in the order they are first met, as
        Counter(zip(col(first), col(second))) has them, at half its cost."""
        (c1, w1, o1), (c2, w2, o2) = ((_CODE[f], struct.calcsize(_CODE[f]), self._off(f, 0))
                                      for f in (first, second))
        at = -(-w1 // w2) * w2              # the second field's place in the key, aligned
        count = self.count
        if (c1 not in "BH" or c2 not in "BH" or at + w2 > 4 or o1 % w1 or o2 % w2
                or self.stride % w2 or len(self.records) < count * self.stride):
            return Counter(zip(self.col(first), self.col(second)))
        key = bytearray(4 * count)
        keys = memoryview(key)
        keys.cast(c1)[::4 // w1] = self._mv.cast(c1)[o1 // w1::self.stride // w1]
        keys.cast(c2)[at // w2::4 // w2] = self._mv.cast(c2)[o2 // w2::self.stride // w2]
        ints = keys.cast("I")
        if self.mask is not None:
            ints = compress(ints, self.mask)
        low, shift = (1 << 8 * w1) - 1, 8 * at
        return Counter({(k & low, k >> shift): n for k, n in Counter(ints).items()})


_UNSIGNED = {"B": "B", "H": "H", "I": "I", "i": "I", "Q": "Q", "q": "Q"}


class KeyRows:
    """How the fields of one table's key are packed into a row per record:
    each at an offset aligned to its width, the row 4 or 8 bytes (counted as
    one int) or a multiple of 8 (counted as its hex text). Made once per key."""

    __slots__ = ("fields", "width", "fmt")

    def __init__(self, fields: List[Tuple[str, int]]):
        placed, at, fmt = [], 0, "<"
        for name, extra in fields:
            code = _CODE[name]
            w = struct.calcsize(code)
            pad = -at % w
            fmt += "x" * pad + code
            at += pad
            placed.append((name, extra, _UNSIGNED[code], w, at))
            at += w
        self.width = 4 if at <= 4 else -(-at // 8) * 8
        self.fmt = fmt + "x" * (self.width - at)
        self.fields = placed

    def decode(self, raw):
        """A packed row (int or hex text) -> the key: the value itself for one
        field, else the tuple of values, as Counter(zip(columns)) has it."""
        row = raw.to_bytes(self.width, "little") if isinstance(raw, int) else bytes.fromhex(raw)
        values = struct.unpack(self.fmt, row)
        return values[0] if len(values) == 1 else values


def count_rows(raw: Counter, cols: Columns, key: KeyRows) -> None:
    """raw[row] += 1 per record seen, the key's fields copied side by side
    into one row per record (a strided copy in C a field) and the rows counted
    in C as ints (rows of up to 8 bytes) or as their hex text (wider): one
    object a record instead of a tuple of ints, about half the cost, and no
    Python loop at all. The rows are decoded into keys (KeyRows.decode) once
    per distinct row, when the table is read. A buffer whose rows are all the
    same (a storm of one process) is counted once."""
    count, width = cols.count, key.width
    rows = bytearray(width * count)
    out = memoryview(rows)
    for name, extra, code, w, at in key.fields:
        src = cols._mv.cast(code)
        out.cast(code)[at // w::width // w] = src[cols._off(name, extra) // w::cols.stride // w]
    if cols.mask is None and count and rows[width:] == rows[:-width]:
        raw[int.from_bytes(rows[:width], "little") if width <= 8 else rows[:width].hex()] += count
        return
    keys = out.cast("I" if width == 4 else "Q") if width <= 8 else rows.hex(" ", width).split(" ")
    if cols.mask is not None:
        keys = compress(keys, cols.mask)
    elif width <= 8:
        keys = keys.tolist()
    raw.update(keys)


def count_keys(counter: Counter, parts: List[Tuple[Optional[int], Optional[list]]], n: int) -> None:
    """counter[key] += 1 per record, the key made of `parts` (a single part:
    the value itself, several: a tuple), with the constant parts counted once."""
    varying = [i for i, (_, values) in enumerate(parts) if values is not None]
    key = [v for v, _ in parts]
    if len(parts) == 1:
        if varying:
            counter.update(parts[0][1])
        else:
            counter[key[0]] += n
    elif not varying:
        counter[tuple(key)] += n
    elif len(varying) == 1 and len(distinct := Counter(parts[varying[0]][1])) * 4 < n:
        # few values (a handful of ports, say): one key built per value
        j = varying[0]
        for value, k in distinct.items():
            key[j] = value
            counter[tuple(key)] += k
    else:
        counter.update(zip(*(values if values is not None else repeat(v, n) for v, values in parts)))


# bytes.translate tables: a record's family byte -> 1 for the wanted family, else 0
FAMILY_MASKS = {f: bytes(1 if i == f else 0 for i in range(256)) for f in ev.FAMILIES}
