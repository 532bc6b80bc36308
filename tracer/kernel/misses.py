"""The misses the kernel records against tcpoom's own programs: calls of a
probed function that no program saw, so no in-kernel counter counted them.

Two mechanisms, read through BPF_OBJ_GET_INFO_BY_FD:
- bpf_prog_info.recursion_misses: a program not run because it (or, for
  kprobes, another kprobe/perf program) was already running on that CPU. The
  field is 5.12+; fentry/fexit count into it from then on, raw_tp/tp_btf from
  6.1 (5.15's __bpf_trace_run has no recursion check, 6.1's has one), kprobe
  programs skipped for bpf_prog_active from 6.7 (uncounted in 6.6).
- bpf_link_info.perf_event.kprobe.missed (6.7+): the kprobe itself missed
  (kprobes do not nest; no free kretprobe instance).
Where a mechanism exists but is not counted on this kernel, the family's figure
says so instead of reading 0.
"""
from __future__ import annotations

import ctypes
import errno
import os
from typing import Dict, Iterable, List, Optional, Tuple

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
_BPF_OBJ_GET_INFO_BY_FD = 15
# offsets in the uapi structs (checked against this kernel's BTF by a test)
PROG_INFO_SIZE = 232
RECURSION_MISSES_OFF = 208
LINK_INFO_SIZE = 64
LINK_TYPE_PERF_EVENT = 7
PERF_EVENT_TYPE_OFF = 16
PERF_EVENT_KPROBE, PERF_EVENT_KRETPROBE = 3, 4
KPROBE_MISSED_OFF = 48

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def _info(fd: int, size: int) -> Tuple[bytes, int]:
    """The info struct of a BPF object fd and the length the kernel filled
    (min of its own size and ours: a field past it does not exist there)."""
    buf = ctypes.create_string_buffer(size)
    attr = _InfoAttr(fd, size, ctypes.addressof(buf))
    if _libc.syscall(_SYS_BPF, _BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
        raise OSError(ctypes.get_errno() or errno.EINVAL, "BPF_OBJ_GET_INFO_BY_FD")
    return buf.raw, attr.info_len


def recursion_misses(prog_fd: int) -> Optional[int]:
    """bpf_prog_info.recursion_misses, None where the kernel has no such field."""
    try:
        raw, filled = _info(prog_fd, PROG_INFO_SIZE)
    except OSError:
        return None
    if filled < RECURSION_MISSES_OFF + 8:
        return None
    return int.from_bytes(raw[RECURSION_MISSES_OFF:RECURSION_MISSES_OFF + 8], "little")


def kprobe_missed(link_fd: int) -> Optional[int]:
    """bpf_link_info.perf_event.kprobe.missed of a kprobe link, None where the
    fd is no BPF link (libbpf attached through the perf ioctl) or not a kprobe."""
    try:
        raw, _ = _info(link_fd, LINK_INFO_SIZE)
    except OSError:
        return None
    if int.from_bytes(raw[0:4], "little") != LINK_TYPE_PERF_EVENT:
        return None
    if int.from_bytes(raw[PERF_EVENT_TYPE_OFF:PERF_EVENT_TYPE_OFF + 4], "little") not in \
            (PERF_EVENT_KPROBE, PERF_EVENT_KRETPROBE):
        return None
    return int.from_bytes(raw[KPROBE_MISSED_OFF:KPROBE_MISSED_OFF + 8], "little")


def _recursion_counted(method: str, version: tuple) -> Optional[str]:
    """None when programs of `method` count their skips on this kernel, else why not."""
    if method in ("tp_btf", "raw_tp") and version < (6, 1):
        return "tracepoint programs count no recursion misses before 6.1"
    if method == "kprobe" and version < (6, 7):
        return "kprobe programs skipped while another runs are not counted before 6.7"
    return None


class Misses:
    """Per family, the misses of the programs the plan attached for it.

    programs: (family, method, prog fd, link fd or -1) for each attached program."""

    def __init__(self, programs: Iterable[Tuple[str, str, int, int]], version: tuple, links: bool = True):
        self._programs = list(programs)
        self._version = version
        self._links = links         # False: bcc attaches kprobes without BPF links

    def read(self) -> Dict[str, Optional[int]]:
        """family -> misses so far (the sum of what this kernel counts), None
        where nothing relevant is counted here."""
        out: Dict[str, Optional[int]] = {}
        for family, method, prog_fd, link_fd in self._programs:
            n: Optional[int] = None
            if _recursion_counted(method, self._version) is None:
                n = recursion_misses(prog_fd)
            if method == "kprobe" and self._links and link_fd >= 0:
                k = kprobe_missed(link_fd) if self._version >= (6, 7) else None
                if k is not None:
                    n = (n or 0) + k
            out.setdefault(family, None)
            if n is not None:
                out[family] = (out[family] or 0) + n
        return out

    def unmeasured(self) -> Dict[str, str]:
        """family -> what this kernel does not count for it."""
        out: Dict[str, str] = {}
        for family, method, prog_fd, link_fd in self._programs:
            why: List[str] = []
            r = _recursion_counted(method, self._version)
            if r:
                why.append(r)
            elif recursion_misses(prog_fd) is None:
                why.append("no bpf_prog_info.recursion_misses (5.12+)")
            if method == "kprobe":
                if not self._links:
                    why.append("kprobe missed counts: the bcc engine's kprobes have no BPF link")
                elif self._version < (6, 7) or link_fd < 0 or kprobe_missed(link_fd) is None:
                    why.append("no kprobe missed count in bpf_link_info (6.7+)")
            if why and family not in out:
                out[family] = "; ".join(why)
        return out


def delta(now: Dict[str, Optional[int]], before: Dict[str, Optional[int]]) -> Dict[str, int]:
    """The families whose misses grew, by how much."""
    return {f: n - (before.get(f) or 0) for f, n in now.items()
            if n is not None and n > (before.get(f) or 0)}
