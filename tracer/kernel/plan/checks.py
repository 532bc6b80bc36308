"""Whether an attach method is usable on a kernel. Each check returns None when
it is, else the reason it is not (shown as the method's rejection)."""
from __future__ import annotations

import errno as errno_mod
from typing import Optional

from ..facts import KernelFacts


def errno_name(e: int) -> str:
    if e == 524:
        return "ENOTSUPP"
    return errno_mod.errorcode.get(e, str(e))


def has_ringbuf(f: KernelFacts) -> bool:
    """BPF_MAP_TYPE_RINGBUF: 5.8+, or a vendor kernel that backported it (its BTF says)."""
    return f.ringbuf if f.ringbuf is not None else f.version() >= (5, 8)


NO_RINGBUF = ("no BPF ring buffer (5.8+): every tcpoom event goes through one, so on this "
              "kernel counters only (TcpExt in /proc/net/netstat, /proc/net/sockstat)")


def need_btf(f: KernelFacts) -> Optional[str]:
    if not f.btf:
        return "no BTF (/sys/kernel/btf/vmlinux missing): CO-RE needs it"
    if not has_ringbuf(f):
        # the object's `events` map is a ring buffer: the whole load would fail
        return NO_RINGBUF
    return None


def need_fentry(f: KernelFacts, func: str) -> Optional[str]:
    why = need_btf(f)
    if why:
        return why
    if not f.btf_functions.get(func):
        return f"{func} not in the kernel's BTF"
    if f.fentry_errno is None:
        return "not tried (needs root)" if not f.root else "not tried"
    if f.fentry_errno != 0:
        if f.fentry_errno == errno_mod.EPERM:
            return "load refused (EPERM)"
        return f"load refused ({errno_name(f.fentry_errno)})"
    return None


def kprobe_target(f: KernelFacts, func: str) -> Optional[str]:
    """Why a kprobe cannot attach to `func` on this kernel, whatever the engine."""
    if not f.kprobes:
        return "kernel built without CONFIG_KPROBES"
    if not f.kallsyms_read:
        return "kallsyms not read (needs root)"
    if not f.kallsyms_functions.get(func):
        return f"{func} not in /proc/kallsyms (inlined or absent)"
    return None


def need_kprobe(f: KernelFacts, func: str) -> Optional[str]:
    return need_btf(f) or kprobe_target(f, func)


def need_tracepoint(f: KernelFacts, tp: str, nargs: int, raw: bool) -> Optional[str]:
    why = need_btf(f)
    if why:
        return why
    have = f.tracepoints.get(tp)
    if have is None:
        return f"tracepoint {tp} not in this kernel"
    if have < nargs:
        return f"tracepoint {tp} has {have} arguments, {nargs} needed"
    if not raw and f.version() < (5, 5):
        return "tp_btf needs kernel 5.5+"
    return None
