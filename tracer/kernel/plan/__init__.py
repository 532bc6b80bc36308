"""The probe plan: per event family, the best attach method this kernel allows,
the fidelity of every field, and why each better method was rejected.

A pure function of KernelFacts: deterministic, testable without root, shown by
`tcpoom probes`, stored in recordings. Only the loader touches the kernel.

model.py (what a plan is, the choice), checks.py (is a method usable),
families.py (what each method can say, for both engines), core.py and bcc.py
(each engine's candidates), owner.py (where the socket's owner is noted).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from tracer.errors import KernelUnsupported
from ..facts import KernelFacts
from .bcc import BCC_ATTACH, BCC_MIN_VERSION, build_bcc, headers_path
from .checks import NO_RINGBUF, has_ringbuf
from .core import build_core
from .families import mem_blind_spot
from .model import DERIVED, EXACT, SAMPLED, UNAVAILABLE, FamilyPlan, Plan

__all__ = ["BCC_ATTACH", "BCC_MIN_VERSION", "DERIVED", "ENGINES", "EXACT", "NO_RINGBUF", "SAMPLED",
           "UNAVAILABLE", "FamilyPlan", "Plan", "build", "choose_engine", "has_ringbuf", "mem_blind_spot"]

ENGINES = ("auto", "co-re", "bcc")


def build(f: KernelFacts, banned: Optional[Dict[str, List[Tuple[str, str]]]] = None,
          engine: str = "co-re") -> Plan:
    """The plan of `engine` ("co-re" or "bcc"; choose_engine() settles "auto")."""
    banned = banned or {}
    return build_bcc(f, banned) if engine == "bcc" else build_core(f, banned)


def choose_engine(f: KernelFacts, requested: str = "auto") -> str:
    """"co-re" or "bcc" for `requested` ("auto", "co-re", "bcc").

    auto: CO-RE wherever the kernel has BTF (no compiler, millisecond start),
    bcc where it has none but its headers are installed. Where it has neither,
    auto stays with CO-RE, whose plan is then counters only and says why (the
    capture commands refuse it with exit code 3). An explicit bcc without
    headers is refused here."""
    if requested not in ENGINES:
        raise ValueError(f"unknown engine {requested!r}")
    if requested == "bcc":
        if not f.headers:
            raise KernelUnsupported(
                f"the bcc engine needs the kernel headers at {headers_path(f)} (none here): "
                f"install linux-headers-{f.release}" + ("" if not f.btf else ", or use --engine co-re"))
        return "bcc"
    if requested == "auto" and not f.btf and f.headers:
        return "bcc"
    return "co-re"
