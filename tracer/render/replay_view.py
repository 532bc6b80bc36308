"""`tcpoom replay --dashboard`: a recording drives the live dashboard."""
from __future__ import annotations

import time

from tracer.model import tracefile as tf
from .dashboard import DashboardState, render
from tracer.model.events import EVENT_SIZE
from .keys import Keys
from tracer.model.playback import clock_of


def run(reader: tf.TraceReader, speed: float) -> None:
    from rich.console import Console
    from rich.live import Live

    header = dict(reader.header, _replay=True)
    plan = (header.get("plan") or {}).get("families", {})
    st = DashboardState(header, plan, header.get("families") or list(plan), clock_of(header))
    console = Console()
    keys = Keys()
    t0_data = None
    t0_wall = time.monotonic()
    paused_for = 0.0
    try:
        with Live(render(st, console.width, console.height), console=console, screen=True,
                  auto_refresh=False) as view:
            def wait_until(ts_ns: int) -> bool:
                """Sleep (drawing, reading keys) until the data time is due; False: quit."""
                nonlocal paused_for
                last_draw = 0.0
                while True:
                    pressed = keys.read()
                    if "q" in pressed.lower():
                        return False
                    if " " in pressed:
                        st.paused = not st.paused
                    now = time.monotonic()
                    due = (t0_wall + paused_for + (ts_ns - t0_data) / 1e9 / speed) if speed > 0 else now
                    if st.paused:
                        paused_for += 0.05
                    elif now >= due:
                        return True
                    if now - last_draw >= 0.25:
                        last_draw = now
                        view.update(render(st, console.width, console.height), refresh=True)
                    time.sleep(0.05)

            for block in reader.blocks():
                if block.type == tf.EVENTS:
                    size, count, records, stride, skip = block.events()
                    if size != EVENT_SIZE or not count:
                        continue
                    first = int.from_bytes(records[skip:skip + 8], "little")
                    if t0_data is None:
                        t0_data = first
                    if not wait_until(first):
                        return
                    st.add_events(bytes(records), count, stride, skip)
                elif block.type == tf.SNAPSHOT:
                    snap = block.json()
                    if t0_data is None:
                        t0_data = snap.get("ts_ns", 0)
                    if not wait_until(snap.get("ts_ns", t0_data)):
                        return
                    st.add_snapshot(snap)
                elif block.type == tf.COUNTERS:
                    st.counters = block.json().get("counters")
                elif block.type == tf.HOLDERS:
                    st.holders = block.json()
                elif block.type == tf.CGROUPS:
                    st.agg.names.learn(block.json())
                view.update(render(st, console.width, console.height), refresh=True)
            st.note = "end of recording"
            wait_until(1 << 62) if speed > 0 else None
    finally:
        keys.close()
