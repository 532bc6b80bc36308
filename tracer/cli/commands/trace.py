"""Attach and print every TCP socket-memory event as it happens, one line each,
unrate-limited. On exit (Ctrl-C, SIGTERM, --duration, --count) print the
in-kernel totals next to the kernel's own TcpExt counters over the same
interval, and the loss counters.

`pid=` on a line is the socket's owner: the process that listened, closed, or
last sent or received on it; `ctx=` follows when the event ran in
another task (a softirq or a timer interrupts whatever was running).

\b
Examples:
  tcpoom trace                         # every event, until Ctrl-C
  tcpoom trace --duration 60 --family oom_check
  tcpoom trace --netns lab --port 443 --json | jq .verdict
  tcpoom trace --container 4f5c1a2b3c4d  # one container's sockets (--cgroup PATH, --pid)"""
from __future__ import annotations

import json
import sys
from typing import List, Optional, Tuple

import click

from tracer.capture import who
from tracer.capture.capture import Capture, Stop
from tracer.model.events import FAMILY_IDS, FLAT_NAMES, FRAMED_STRUCT, STRIDE, Event, at
from tracer.model.clock import Clock
from tracer.render.jsonl import JsonLines
from tracer.render.lines import text
from tracer.render.output import Output
from tracer.kernel.loader import RINGBUF_DEFAULTS
from .options import capture_options, filters_from


FAMILY_INDEX = FLAT_NAMES.index("family")


def _json_lines(payload: bytes, n: int, room: int, wanted_ids, fmt) -> List[str]:
    """The JSON text of a batch's records of the wanted families (at most `room`):
    the records unpacked in one pass, no Event object per record (a storm's
    hot path: render/jsonl.py)."""
    fam = FAMILY_INDEX
    lines = [fmt(t) for t in FRAMED_STRUCT.iter_unpack(memoryview(payload)[:n * STRIDE])
             if t[fam] in wanted_ids]
    return lines[:room] if len(lines) > room else lines


def _start_line(cap: Capture) -> str:
    parts = []
    for fam in cap.families:
        fp = cap.plan.families[fam]
        parts.append(f"{fam} ({fp.method} {fp.target})")
    where = f" in netns {cap.filters.netns}" if cap.filters.netns else ""
    return f"tcpoom: tracing {', '.join(parts)}{where}. Ctrl-C to stop."


@click.command(help=__doc__, short_help='Print every event as it happens, then totals.')
@click.option("--json", "as_jsonl", is_flag=True, help="JSON Lines: one object per event, then one totals object.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@capture_options(ringbuf_default=RINGBUF_DEFAULTS["trace"])
def trace(as_jsonl: bool, duration: Optional[float], count: Optional[int], netns: Optional[str],
          pid: Optional[int], cgroup_path: Optional[str],
          container: Optional[str], port: Optional[int], families: Tuple[str, ...], ringbuf_size: int,
          engine: str, synthetic_pid: int) -> None:
    filters = filters_from(netns, pid, port, families, ringbuf_size, cgroup_path, container)
    cap = Capture(filters, ringbuf_size, synthetic_pid=synthetic_pid, engine=engine)
    clock = Clock.now()
    out = Output(sys.stdout)
    wanted = set(cap.families)
    wanted_ids = {FAMILY_IDS[f] for f in wanted}
    names = who.names_for(filters)
    as_json = JsonLines(clock, cap.sampled, names)
    keep = who.predicate(filters, names)

    printed = [0]

    def sink(payload: bytes, n: int) -> int:
        # a batch holds up to a poll period of a storm: --count stops inside it
        room = count - printed[0] if count is not None else n
        if as_jsonl and keep is None:
            lines = _json_lines(payload, n, room, wanted_ids, as_json.values)
        else:
            lines = []
            decode, sampled = Event.decode, cap.sampled
            for i in range(n):
                if len(lines) >= room:
                    break
                e = decode(payload, at(i))
                if e.family_name not in wanted or (keep is not None and not keep(e)):
                    continue
                lines.append(as_json(e) if as_jsonl else text(e, clock, sampled, names))
        if lines:
            out.write("\n".join(lines) + "\n")
        printed[0] += len(lines)
        return len(lines)

    try:
        cap.start()
        print(_start_line(cap), file=sys.stderr, flush=True)
        totals = cap.run(sink, Stop(duration, count))
    finally:
        cap.close()
    if as_jsonl:
        out.write(json.dumps(totals.to_json()) + "\n")
    else:
        out.write(totals.text() + "\n")
