"""BTF read through libbpf: the running kernel's (vmlinux), a minimised one
or an object file's. Types, struct layouts, enum values and function
signatures for the kernel facts and the probe plan, and the .rodata layout
the loader writes its config into."""
from __future__ import annotations

import ctypes
import os
from typing import List, Optional, Tuple

from . import libbpf

BTF_KIND_INT = 1
BTF_KIND_PTR = 2
BTF_KIND_ARRAY = 3
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
BTF_KIND_ENUM = 6
BTF_KIND_TYPEDEF = 8
BTF_KIND_FUNC = 12
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
BTF_KIND_ENUM64 = 19


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("offset", ctypes.c_uint32)]


class _BtfEnum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32),
                ("size", ctypes.c_uint32)]


def _kind(t: _BtfType) -> int:
    return (t.info >> 24) & 0x1F


def _vlen(t: _BtfType) -> int:
    return t.info & 0xFFFF


class Btf:
    """A BTF blob: the running kernel's (vmlinux) or an object file's."""

    def __init__(self, handle: int, owned: bool = True):
        self._h = handle
        self._owned = owned
        self._l = libbpf.lib()

    @classmethod
    def vmlinux(cls) -> Optional["Btf"]:
        h = libbpf.lib().btf__load_vmlinux_btf()
        return cls(h) if h else None

    @classmethod
    def from_file(cls, path: str) -> "Btf":
        h = libbpf.lib().btf__parse(path.encode(), None)
        if not h:
            raise libbpf.LibbpfError(f"{path}: no BTF ({os.strerror(libbpf.last_errno())})")
        return cls(h)

    def close(self) -> None:
        if self._h and self._owned:
            self._l.btf__free(self._h)
        self._h = None

    def __enter__(self) -> "Btf":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def find(self, name: str, kind: int) -> int:
        """Type id of `name` of `kind`, or 0."""
        tid = self._l.btf__find_by_name_kind(self._h, name.encode(), kind)
        return tid if tid > 0 else 0

    def has_func(self, name: str) -> bool:
        return self.find(name, BTF_KIND_FUNC) > 0

    def _type(self, tid: int) -> _BtfType:
        return _BtfType.from_address(self._l.btf__type_by_id(self._h, tid))

    def _name(self, off: int) -> str:
        s = self._l.btf__name_by_offset(self._h, off)
        return s.decode() if s else ""

    def _trailer(self, tid: int, cls, count: int):
        base = self._l.btf__type_by_id(self._h, tid) + ctypes.sizeof(_BtfType)
        return (cls * count).from_address(base)

    def struct_layout(self, name: str) -> Tuple[int, List[Tuple[str, int]]]:
        """(size, [(member, byte offset)]) of a struct."""
        tid = self.find(name, BTF_KIND_STRUCT)
        if not tid:
            raise libbpf.LibbpfError(f"struct {name} not in BTF")
        t = self._type(tid)
        members = self._trailer(tid, _BtfMember, _vlen(t))
        kflag = t.info >> 31
        out = []
        for m in members:
            bits = m.offset & 0xFFFFFF if kflag else m.offset
            out.append((self._name(m.name_off), bits // 8))
        return t.size_or_type, out

    def _skip_modifiers(self, tid: int) -> int:
        # typedef, volatile, const, restrict (8, 9, 10, 11) and type tags (18)
        while tid and _kind(self._type(tid)) in (BTF_KIND_TYPEDEF, 9, 10, 11, 18):
            tid = self._type(tid).size_or_type
        return tid

    def member_pointee(self, struct: str, member: str) -> Optional[Tuple[str, str]]:
        """What a pointer member of a struct points to: ("struct", name),
        ("int", name) or ("other", ""); None when the struct or member is absent
        or the member is no pointer. libbpf's CO-RE field checks take any two
        pointers as compatible; this looks at the pointee itself."""
        tid = self.find(struct, BTF_KIND_STRUCT)
        if not tid:
            return None
        t = self._type(tid)
        for m in self._trailer(tid, _BtfMember, _vlen(t)):
            if self._name(m.name_off) != member:
                continue
            ptr = self._skip_modifiers(m.type)
            if _kind(self._type(ptr)) != BTF_KIND_PTR:
                return None
            target = self._skip_modifiers(self._type(ptr).size_or_type)
            kind = _kind(self._type(target)) if target else 0
            name = self._name(self._type(target).name_off) if target else ""
            if kind == BTF_KIND_STRUCT:
                return ("struct", name)
            if kind == BTF_KIND_INT:
                return ("int", name)
            return ("other", name)
        return None

    def enum_value(self, enum: str, name: str) -> Optional[int]:
        """Numeric value of an enumerator, or None (enum or value absent)."""
        tid = self.find(enum, BTF_KIND_ENUM)
        if not tid:
            return None
        t = self._type(tid)
        for e in self._trailer(tid, _BtfEnum, _vlen(t)):
            if self._name(e.name_off) == name:
                return e.val
        return None

    def func_param_count(self, name: str) -> Optional[int]:
        """Number of parameters of a function (or of a tracepoint's btf_trace_ typedef)."""
        tid = self.find(name, BTF_KIND_FUNC)
        if tid:
            proto = self._type(self._type(tid).size_or_type)
            return _vlen(proto)
        tid = self.find(name, BTF_KIND_TYPEDEF)
        if not tid:
            return None
        ptr = self._type(self._type(tid).size_or_type)     # typedef -> ptr
        proto = self._type(ptr.size_or_type)                # ptr -> func_proto
        return _vlen(proto) - 1                             # minus the void *__data

    def datasec_vars(self, section: str) -> dict:
        """{variable: (offset, size)} of a DATASEC such as .rodata."""
        tid = self.find(section, BTF_KIND_DATASEC)
        if not tid:
            return {}
        t = self._type(tid)
        out = {}
        for v in self._trailer(tid, _BtfVarSecinfo, _vlen(t)):
            out[self._name(self._type(v.type).name_off)] = (v.offset, v.size)
        return out
