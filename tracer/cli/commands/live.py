"""A full-screen live dashboard: TCP memory against the tcp_mem watermarks,
orphans against tcp_max_orphans (with the shift penalty), TIME_WAIT against its
limit, per-family rates, the latest events, top processes and ports, the
sockets holding the most memory during pressure, and what the kernel log
printed against what really happened. Redrawn 4 times a second; q or Ctrl-C
quits with a summary. Without a terminal (or with --no-screen) it prints a
text summary every --interval seconds instead.

\b
Examples:
  tcpoom live
  tcpoom live --record /var/tmp/incident.tcpoom   # watch and record
  tcpoom live --no-screen --interval 10           # text, for a log"""
from __future__ import annotations

import sys
import time
from typing import Optional, Tuple

import click

from tracer.capture.capture import Capture, Stop
from tracer.render.dashboard import DashboardState, render, summary_text
from tracer.model.events import EVENT_SIZE
from tracer.render.keys import Keys
from tracer.host.kmsg import TCP_PATTERNS, KernelLog, suppressed_total
from tracer.model.clock import Clock
from tracer.kernel.loader import RINGBUF_DEFAULTS
from tracer import outfile
from tracer.capture.recorder import Recorder
from tracer.capture import cgroup_ids, who
from tracer.capture.header import header
from tracer.capture.recording import Recording
from tracer.capture.tick import Second, Tick
from .options import capture_options, filters_from


def _kmsg_counts(messages):
    return {p: sum(p in m for m in messages) for p in TCP_PATTERNS}


@click.command(help=__doc__, short_help='Full-screen live dashboard (q quits).')
@click.option("--record", "record_to", help="Also record to this file.")
@click.option("--force", is_flag=True, help="Replace an existing recording at --record.")
@click.option("--no-screen", is_flag=True, help="Periodic text summaries instead of the full screen.")
@click.option("--interval", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds between text summaries (--no-screen or no terminal).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@capture_options(ringbuf_default=RINGBUF_DEFAULTS["live"])
def live(record_to: Optional[str], no_screen: bool, interval: float, duration: Optional[float],
         netns: Optional[str], pid: Optional[int], cgroup_path: Optional[str],
         container: Optional[str], port: Optional[int], families: Tuple[str, ...],
         ringbuf_size: int, engine: str, synthetic_pid: int, force: bool) -> None:
    if record_to:
        outfile.check(record_to, (), force)     # before attaching anything
    filters = filters_from(netns, pid, port, families, ringbuf_size, cgroup_path, container)
    cap = Capture(filters, ringbuf_size, synthetic_pid=synthetic_pid, engine=engine)
    screen = sys.stdout.isatty() and not no_screen
    stop = Stop(duration, None)
    kmsg = KernelLog()
    keys = Keys() if screen else None
    state = {"draw_at": 0.0, "print_at": time.monotonic() + interval}
    try:
        cap.start()
        hdr = header(cap, sys.argv)
        st = DashboardState(hdr, cap.plan.to_json()["families"], cap.families, Clock.now())
        st.sampled = cap.sampled
        st.kmsg_error = kmsg.error
        ids = cgroup_ids.CgroupIds()
        st.agg.names = ids.names           # resolved on this host as ids come
        keep = who.predicate(filters, ids.names)
        st.add_snapshot(cap.first_snapshot)
        tick = Tick(cap if cap.session is not None else None, filters.netns, missed=cap.missed)
        recording = None
        if record_to:
            recording = Recording(Recorder(record_to, hdr, EVENT_SIZE, force=force), cap, tick, stop, ids)

        def sink(payload: bytes, n: int) -> int:
            if keep is not None:
                payload, n = who.only(payload, n, keep)
                if not n:
                    return 0
            st.add_events(payload, n)
            if recording is None:
                ids.note(payload, n)     # names for the top table (a recording notes them itself)
            if recording:
                recording.events(payload, n)
            return n

        def second(s: Second) -> None:
            if recording is None:
                ids.block()              # resolve what came; nothing to write it to
            st.add_snapshot(s.snapshot)
            st.counters = s.counters
            st.missed = s.missed_total
            msgs = kmsg.read_new()
            st.add_kmsg(_kmsg_counts(msgs), suppressed_total(msgs))
            if s.holders is not None:
                if "error" in s.holders:
                    st.note = f"holders: {s.holders['error']}"
                else:
                    st.holders = s.holders

        def call(now: float) -> None:
            st.now_ns = time.monotonic_ns()
            if keys and "q" in keys.read().lower():
                stop.request("q")
            if screen and now - state["draw_at"] >= 0.25:
                state["draw_at"] = now
                view.update(render(st, console.width, console.height), refresh=True)
            elif not screen and now >= state["print_at"]:
                state["print_at"] = now + interval
                print(summary_text(st), flush=True)

        tick.on_second(second).on_call(call)

        if screen:
            from rich.console import Console
            from rich.live import Live
            console = Console()
            with Live(render(st, console.width, console.height), console=console, screen=True,
                      auto_refresh=False) as view:
                totals = cap.run(sink, stop, tick)
        else:
            view = console = None
            print(f"tcpoom: live summaries every {interval:g} s. Ctrl-C to stop.", file=sys.stderr, flush=True)
            totals = cap.run(sink, stop, tick)
        if recording:
            recording.close(totals)
    finally:
        if keys:
            keys.close()
        kmsg.close()
        cap.close()
    print(totals.text())
