"""Reading a recording back as a stream of events, in recorded order, with the
/proc samples that fill what the kernel side could not read."""
from __future__ import annotations

import time
from typing import Callable, Iterator, Optional, Tuple

from . import tracefile as tf
from .events import EVENT_SIZE, Event
from .clock import Clock
from .samples import Sampled
from .containers import Names


def clock_of(header: dict) -> Clock:
    return Clock.of(header)


def names_of(reader: tf.TraceReader) -> Names:
    """The cgroup names a recording carries. They are written after the events
    that name them (once a second), so they are read first, on their own: block
    headers are skipped over, only cgroups blocks are read."""
    names = Names()
    f = reader._f
    for offset, btype in reader.block_offsets():
        if btype != tf.CGROUPS:
            continue
        f.seek(offset)
        block, _ = tf.read_block(f, 0)
        if block is not None and tf.check(block) is None:
            names.learn(block.json())
    reader.damage = None          # blocks() says again what it finds
    return names


def stream(reader: tf.TraceReader, sampled: Sampled) -> Iterator[Tuple[str, object]]:
    """("events", [Event...]) per events block, ("trailer", dict), and samples
    folded into `sampled` as they come."""
    for block in reader.blocks():
        if block.type == tf.EVENTS:
            size, count, records, stride, skip = block.events()
            if size != EVENT_SIZE:
                continue
            yield "events", [Event.decode(records, i * stride + skip) for i in range(count)]
        elif block.type == tf.SNAPSHOT:
            snap = block.json()
            tcp = snap.get("sockstat", {}).get("TCP", {})
            sampled.add(snap.get("ts_ns", 0), tcp.get("orphan"),
                        snap.get("limits", {}).get("tcp_max_orphans"))
        elif block.type == tf.TRAILER:
            yield "trailer", block.json()


class Pacer:
    """Sleeps so events come out at the recorded pace times `speed` (0: no waiting)."""

    def __init__(self, speed: float, sleep: Callable[[float], None] = time.sleep):
        self.speed = speed
        self.sleep = sleep
        self.t0_event: Optional[int] = None
        self.t0_wall = 0.0

    def wait_for(self, ts_ns: int) -> None:
        if self.speed <= 0:
            return
        if self.t0_event is None:
            self.t0_event, self.t0_wall = ts_ns, time.monotonic()
            return
        due = self.t0_wall + (ts_ns - self.t0_event) / 1e9 / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            self.sleep(delay)
