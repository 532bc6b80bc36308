"""What a probe plan is: per event family the chosen method, the fidelity of
each field and the methods rejected on the way, and the choice itself
(the first candidate whose check passes)."""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

from ..facts import KernelFacts

EXACT, DERIVED, SAMPLED, UNAVAILABLE = "exact", "derived", "sampled", "unavailable"

Fields = Dict[str, Tuple[str, str]]
#: (method, target, programs, check): check returns None when usable, else why not
Candidate = Tuple[str, str, List[str], Callable[[KernelFacts], Optional[str]]]


@dataclasses.dataclass
class FamilyPlan:
    family: str
    method: str                       # fentry, kprobe, tp_btf, raw_tp, sampled
    target: str                       # function or tracepoint, or the /proc source
    programs: List[str]               # BPF programs to load (names in tcpoom.bpf.c)
    fields: Fields                    # field -> (fidelity, how)
    rejected: List[Tuple[str, str]]   # (method target, reason), best first
    blind_spot: str = ""              # what this method cannot see one by one


@dataclasses.dataclass
class Plan:
    kernel: str
    engine: str                       # "co-re", "bcc", or "none" (counters only)
    families: Dict[str, FamilyPlan]
    config: Dict[str, int]            # .rodata values for the loader
    notes: List[str]
    owner: Dict = dataclasses.field(default_factory=dict)   # owner.owner_plan(): the socket's owner

    def to_json(self) -> dict:
        return {
            "kernel": self.kernel, "engine": self.engine, "notes": self.notes,
            "config": self.config, "owner": self.owner,
            "families": {
                name: {
                    "method": fp.method, "target": fp.target, "programs": fp.programs,
                    "fields": {k: {"fidelity": v[0], "how": v[1]} for k, v in fp.fields.items()},
                    "rejected": [{"method": m, "reason": r} for m, r in fp.rejected],
                    "blind_spot": fp.blind_spot,
                } for name, fp in self.families.items()
            },
        }

    def programs(self) -> List[str]:
        out: List[str] = []
        for fp in self.families.values():
            out += [p for p in fp.programs if p not in out]
        if out:     # owner programs only serve events
            out += [p for p in self.owner.get("programs", []) if p not in out]
        return out

    def demote_owner(self, program: str, reason: str, facts: KernelFacts) -> Optional["Plan"]:
        """demote() the family that loads `program` (refused by the kernel);
        None when no family of the plan loads it."""
        family = next((f for f, fp in self.families.items() if program in fp.programs), None)
        return None if family is None else self.demote(family, reason, facts)

    def demote(self, family: str, reason: str, facts: KernelFacts) -> "Plan":
        """A new plan where `family`'s current method is rejected for `reason`
        (for instance the verifier refused it on this kernel)."""
        from . import build     # the planners build Plans: imported when demoting only
        banned = {f: list(b) for f, b in self._banned.items()}
        banned.setdefault(family, []).append((self.families[family].method, reason))
        return build(facts, banned, engine="bcc" if self.engine == "bcc" else "co-re")

    _banned: Dict[str, List[Tuple[str, str]]] = dataclasses.field(default_factory=dict)


def choose(family: str, f: KernelFacts, candidates: List[Candidate],
           banned: List[Tuple[str, str]], sampled: Tuple[str, str]) -> FamilyPlan:
    """The first usable candidate, else counters only (`sampled`: target, blind spot)."""
    rejected: List[Tuple[str, str]] = []
    banned_methods = {m for m, _ in banned}
    for method, target, programs, check in candidates:
        label = f"{method} {target}"
        why = check(f)
        if why is None and method in f.denied_methods:
            why = "ruled out by TCPOOM_DENY_METHODS"
        if why is None and method in banned_methods:
            why = dict(banned)[method]
        if why:
            rejected.append((label, why))
            continue
        return FamilyPlan(family, method, target, programs, {}, rejected)
    target, blind = sampled
    return FamilyPlan(family, "sampled", target, [], {}, rejected, blind)
