"""Starting an engine on the best plan that really loads.

The plan is chosen from the kernel's facts, but only the kernel decides: the
verifier may refuse a program that every fact allowed (a helper missing on
a backported kernel, a kprobe target inlined away). A refused program demotes
its family to the plan's next method, and the engine starts again; the CO-RE
loader and the bcc engine share this loop, each with its own refusal.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from tracer.errors import LoadError
from .facts import KernelFacts
from .plan import Plan

S = TypeVar("S")


class ProgramRefused(LoadError):
    """The kernel (or bcc) would not load or attach `program`."""

    def __init__(self, message: str, program: str, detail: str):
        super().__init__(message)
        self.program = program
        self.detail = detail


def start_demoting(start: Callable[[Plan], S], plan: Plan, facts: KernelFacts, attempts: int) -> S:
    """start(plan), demoting the family of each refused program, at most
    `attempts` times; a refusal no family explains is raised as it is."""
    for _ in range(attempts):
        try:
            return start(plan)
        except ProgramRefused as e:
            demoted = plan.demote_owner(e.program, e.detail, facts)
            if demoted is None:
                raise
            plan = demoted
    raise LoadError("no combination of attach methods loads on this kernel")
