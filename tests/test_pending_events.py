"""The events a recording holds before its next block (tracer/capture/pending.py),
one buffer for `record`'s recorder and `serve`'s flight recorder."""
from tracer.capture import pending
from tracer.capture.pending import FLUSH_BYTES, PendingEvents


def test_a_block_is_due_at_one_mib_or_after_a_second(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(pending.time, "monotonic", lambda: now[0])
    p = PendingEvents()
    assert p.add(b"x" * (FLUSH_BYTES - 1), 3) is False
    assert p.add(b"y", 1) is True
    assert not p.due()
    now[0] += 1.0
    assert p.due()
    assert p.take() == ([b"x" * (FLUSH_BYTES - 1), b"y"], 4)
    # taken: empty, and the next second counts from the take
    assert (p.pieces, p.count, p.bytes) == ([], 0, 0) and not p.due()
    assert p.take() == ([], 0)
