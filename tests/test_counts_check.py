"""scripts/counts_check.py as the slow guests adapt it (scripts/vm/guest_checks.py
raises the tracer's start timeout through Tracer.__init__'s last positional
default): an option added to Tracer once broke every VM test this way."""
from scripts import counts_check
from scripts.lab import context
from scripts.vm import guest_checks


def test_the_guests_adaptation_raises_the_start_timeout_and_keeps_the_command(monkeypatch):
    # _adapt patches both for the rest of the guest's process: put them back after
    monkeypatch.setattr(counts_check.Tracer, "__init__", counts_check.Tracer.__init__)
    monkeypatch.setattr(context.Context, "set_sysctl", context.Context.set_sysctl)
    init = counts_check.Tracer.__init__
    monkeypatch.setattr(init, "__defaults__", init.__defaults__)
    adaptations = []
    guest_checks._adapt(adaptations)
    assert init.__defaults__ == (120.0,)
    assert "tracer start timeout 120 s" in adaptations
    assert init.__kwdefaults__ == {"command": None}
