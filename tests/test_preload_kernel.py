"""The object loaded on a second thread while the CLI is imported (preload.py):
taken when the parsed options are the defaults it guessed, and then it sees
every real event; dropped, with nothing left loaded, when they are not."""
import pytest

from bpf_programs import gone, program_ids
from scripts.lab import Lab
from tracer.cli import entry
from tracer.kernel import loader, preload
from tracer.model import events as ev
from tracer.capture.capture import Capture, Stop

pytestmark = pytest.mark.kernel


def test_default_options_take_the_preloaded_object_and_see_every_event():
    before = program_ids()
    preload.start(["trace"])
    cap = Capture(loader.Filters(), loader.RINGBUF_DEFAULTS["trace"])
    assert preload.facts() is None          # handed to the capture, once
    try:
        with Lab(allow_global_sysctls=True) as lab:
            cap.start()
            assert cap.session.preloaded
            result = lab.run("tw_overflow")
            seen = []

            def sink(payload, count):
                for i in range(count):
                    e = ev.Event.decode(payload, ev.at(i))
                    if e.family == ev.TW_OVERFLOW and e.netns == lab.netns_inode:
                        seen.append(e)
                return count

            cap.run(sink, Stop(0.5, None))
    finally:
        cap.close()
    assert result.deltas["TCPTimeWaitOverflow"] > 0
    assert len(seen) == result.deltas["TCPTimeWaitOverflow"]
    assert gone(program_ids() - before)


@pytest.mark.parametrize("filters,ringbuf", [
    (loader.Filters(port=80), None),
    (loader.Filters(families=["tw_overflow"]), None),
    (loader.Filters(), 8 << 20),
])
def test_other_options_load_anew_and_leave_nothing_behind(filters, ringbuf):
    before = program_ids()
    preload.start(["trace"])
    cap = Capture(filters, ringbuf or loader.RINGBUF_DEFAULTS["trace"])
    try:
        cap.start()
        assert not cap.session.preloaded
    finally:
        cap.close()
    assert gone(program_ids() - before)


@pytest.mark.parametrize("argv,code", [
    (["trace", "--bogus"], 2),
    (["trace", "--engine", "bcc", "--duration", "0.1"], 3),   # no headers here
    (["record"], 2),                                          # -o is required
])
def test_commands_that_never_attach_drop_the_preload(argv, code):
    before = program_ids()
    assert entry.main(argv) == code
    assert preload.take() is None
    assert gone(program_ids() - before)
