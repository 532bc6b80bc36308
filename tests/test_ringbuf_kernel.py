"""The ring buffer consumer against the kernel's real ring buffer: the data
pages are mapped once, so spans and records that wrap past the end are read
in two pieces. Driven by the synthetic source (1000 records per getpid())
through a ring whose size is no multiple of the record stride."""
import os

import pytest

from tracer.model import events as ev
from tracer.kernel import facts as kernel_facts, loader
from tracer.kernel.plan import build

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("how", ["raw", "records"])
def test_records_read_intact_across_many_wraps(how):
    ring = 64 << 10                       # 356 records: every lap ends inside a record
    session = loader.start(kernel_facts.gather(), build(kernel_facts.gather()),
                           loader.Filters(families=[]), ringbuf_bytes=ring,
                           synthetic_pid=os.getpid())
    try:
        rb = session.ringbuf
        ports = []
        for _ in range(30):
            os.getpid()                   # 1000 records; the ring keeps the first 356
            if how == "raw":
                payload, count = rb.read_raw(ev.EVENT_SIZE)
                records = [payload[ev.at(i):ev.at(i) + ev.EVENT_SIZE] for i in range(count)]
            else:
                records = rb.read()
            assert rb.pending() == 0
            batch = [ev.Event.decode(r) for r in records]
            assert all(e.family == ev.OOM_CHECK and e.dport == 5000 and e.max_orphans == 1024
                       for e in batch)
            ports += [e.sport for e in batch]
        counters = session.counters()
    finally:
        session.close()
    kept = ring // ev.STRIDE
    assert len(ports) == 30 * kept
    # each getpid's records are the first `kept` of its batch, in order
    assert ports == [1024 + i for i in range(kept)] * 30
    assert counters[ev.CNT_OOM_CHECK] == 30 * 1000
    assert counters[ev.CNT_LOST_BASE + ev.OOM_CHECK] == 30 * (1000 - kept)
