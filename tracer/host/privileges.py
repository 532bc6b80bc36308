"""What this process may do, from its effective capabilities (/proc/self/status
CapEff): uid 0 alone means nothing in a container that dropped them."""
from __future__ import annotations

import os
from typing import Optional

CAP_SYS_ADMIN, CAP_SYSLOG, CAP_PERFMON, CAP_BPF = 21, 34, 38, 39


def effective_caps() -> Optional[int]:
    """The CapEff bit mask, or None when /proc/self/status cannot say."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def may_trace(caps: Optional[int]) -> bool:
    """BPF programs of the tracing kind need CAP_BPF and CAP_PERFMON (5.8+), or
    CAP_SYS_ADMIN on any kernel."""
    if caps is None:
        return False
    return bool(caps >> CAP_SYS_ADMIN & 1) or bool(caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1)


def privileged() -> bool:
    """Tracing allowed; where the capabilities cannot be read, root is taken as allowed."""
    caps = effective_caps()
    return os.geteuid() == 0 if caps is None else may_trace(caps)


def kallsyms_addresses() -> bool:
    """Without CAP_SYSLOG (or with kptr_restrict) every address reads as zeros."""
    try:
        with open("/proc/kallsyms") as fh:
            return int(fh.readline().split()[0], 16) != 0
    except (OSError, ValueError, IndexError):
        return False


def privileges() -> dict:
    """{"sys_admin", "bpf", "kallsyms_addresses"}: doctor's `host.privileges`."""
    caps = effective_caps() or 0
    return {"sys_admin": bool(caps >> CAP_SYS_ADMIN & 1),
            "bpf": may_trace(caps),
            "kallsyms_addresses": kallsyms_addresses()}
