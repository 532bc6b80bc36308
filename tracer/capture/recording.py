"""What a capture writes to a recording, whoever runs it (`record`,
`live --record`, a flight recorder): the events in batches, and every second
of the tick as a snapshot, the counters, the losses and the holders."""
from __future__ import annotations

import time
from typing import Optional

from tracer.model import events as ev
from tracer.model import tracefile as tf
from tracer.host import snapshots
from . import cgroup_ids
from .capture import Capture, Stop
from .recorder import Recorder
from .tick import Second, Tick

#: at most this often, a light snapshot right after orphan kills
LIGHT_EVERY_S = 0.05
_FAMILY_OFFSET = ev.layout_offsets()["family"]


class Recording:
    """Feeds one Recorder from a started capture and its tick."""

    def __init__(self, rec: Recorder, cap: Capture, tick: Tick, stop: Optional[Stop] = None,
                 ids: Optional[cgroup_ids.CgroupIds] = None):
        self.rec = rec
        # the cgroup ids the records carry, named for a report on another machine
        self.ids = ids if ids is not None else cgroup_ids.CgroupIds()
        self.netns = cap.filters.netns or None
        self.stop = stop
        # this kernel cannot read the orphan count at the decision: sample it
        # (and the limits) right after the events, not a second later
        self.sample_at_events = "oom_check" in cap.families and \
            cap.plan.families["oom_check"].fields.get("orphans", ("",))[0] == "sampled"
        self._light_at = 0.0
        rec.on_rotate = self._rotated
        rec.add_json(tf.SNAPSHOT, cap.first_snapshot)
        tick.on_second(self.second).on_call(self.call)

    def _rotated(self):
        # a fresh file starts with a snapshot
        return [tf.encode_json(tf.SNAPSHOT, snapshots.take(self.netns), self.rec.compress)]

    def events(self, payload: bytes, n: int) -> None:
        if not n:
            return
        self.ids.note(payload, n)
        self.rec.add_events(payload, n)
        if not self.sample_at_events:
            return
        now = time.monotonic()
        if now - self._light_at >= LIGHT_EVERY_S and \
                payload[ev.FRAME + _FAMILY_OFFSET::ev.STRIDE].count(ev.OOM_CHECK):
            self._light_at = now
            self.rec.add_json(tf.SNAPSHOT, snapshots.take_light(self.netns))

    def _names(self) -> None:
        block = self.ids.block()
        if block:
            self.rec.add_json(tf.CGROUPS, block)

    def second(self, s: Second) -> None:
        rec = self.rec
        self._names()
        rec.add_json(tf.SNAPSHOT, s.snapshot)
        if s.counters is not None:
            rec.add_json(tf.COUNTERS, {"ts_ns": time.monotonic_ns(), "counters": s.counters})
        if s.lost or s.missed:
            block = {"ts_ns": time.monotonic_ns(), "lost": s.lost}
            if s.missed:
                block["missed"] = s.missed
            rec.add_json(tf.LOSS, block)
        if s.holders is not None:
            rec.add_json(tf.HOLDERS, s.holders)

    def call(self, now: float) -> None:
        self.rec.tick()
        if self.rec.full and self.stop is not None:
            self.stop.request("max-size")

    def close(self, totals) -> None:
        self._names()
        self.rec.close({"stop_reason": totals.stop_reason, "totals": totals.to_json()})
