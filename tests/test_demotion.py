"""Both engines start through one demotion loop (tracer/kernel/demotion.py):
a program refused at load or attach demotes its family and the engine starts
again on the new plan; a refusal no family explains stops it."""
import os

import pytest

from conftest import DATA
from tracer.errors import LoadError
from tracer.kernel import bcc_engine, demotion, loader
from tracer.kernel.facts import KernelFacts
from tracer.kernel.plan import build


def facts():
    return KernelFacts.load(os.path.join(DATA, "facts-6.1-debian.json"))


def test_a_refused_program_demotes_its_family_and_the_start_is_tried_again():
    f = facts()
    p = build(f)
    refused = p.families["oom_check"].programs[0]
    tried = []

    def start(plan):
        tried.append(plan.families["oom_check"].method)
        if refused in plan.families["oom_check"].programs:
            raise loader.ProgramRefused(refused, "R1 invalid mem access")
        return plan

    started = demotion.start_demoting(start, p, f, 12)
    assert tried == ["fentry", "kprobe"]
    assert started.families["oom_check"].method == "kprobe"
    assert ("fentry tcp_check_oom", "R1 invalid mem access") in started.families["oom_check"].rejected


def test_both_engines_refusals_demote_and_keep_their_own_message():
    for refused in (loader.ProgramRefused("x", "why"), bcc_engine.ProgramRefused("twsk_alloc_kprobe", "why")):
        assert isinstance(refused, demotion.ProgramRefused) and isinstance(refused, LoadError)
    assert str(loader.ProgramRefused("x", "why")) == "the kernel refused BPF program x: why"
    assert str(bcc_engine.ProgramRefused("twsk_alloc_kprobe", "why")).startswith(
        "bcc could not attach twsk_alloc_kprobe (kprobe ")


def test_a_refusal_no_family_explains_is_raised_and_the_attempts_are_bounded():
    f = facts()

    def unexplained(plan):
        raise loader.ProgramRefused("no_such_program", "why")

    with pytest.raises(loader.ProgramRefused):
        demotion.start_demoting(unexplained, build(f), f, 12)

    def always(plan):
        raise loader.ProgramRefused(plan.families["oom_check"].programs[0], "why")

    with pytest.raises(LoadError, match="no combination of attach methods"):
        demotion.start_demoting(always, build(f), f, 1)
