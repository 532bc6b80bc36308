"""Play a recording back through the same pipeline as a live trace: the same
event lines (or JSON Lines), at the recorded pace times --speed (0: as fast as
possible), then the recording's totals. No root needed.

\b
Examples:
  tcpoom replay incident.tcpoom --speed 0        # all at once
  tcpoom replay incident.tcpoom --json | jq -c 'select(.family=="oom_check")'
  tcpoom replay incident.tcpoom --dashboard --speed 4"""
from __future__ import annotations

import json
import sys

import click

from tracer.model import tracefile as tf
from tracer.model.samples import Sampled
from tracer.render.jsonl import JsonLines
from tracer.render.lines import text
from tracer.model.playback import Pacer, clock_of, names_of, stream
from tracer.model.families import FAMILY_ORDER
from tracer.capture.totals import ended, text_from_json
from tracer.errors import DamagedInput
from tracer.render.output import Output


@click.command(help=__doc__, short_help='Play a recording back as event lines or the dashboard.')
@click.argument("file")
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Pace factor: 2 plays twice as fast, 0 without waiting.")
@click.option("--json", "as_jsonl", is_flag=True, help="JSON Lines, as `tcpoom trace --json`.")
@click.option("--family", "families", multiple=True, type=click.Choice(FAMILY_ORDER),
              help="Only these event families (repeatable).")
@click.option("--dashboard", is_flag=True,
              help="Drive the live dashboard instead (space pauses, q quits); needs a terminal.")
def replay(file: str, speed: float, as_jsonl: bool, families, dashboard: bool) -> None:
    reader = tf.TraceReader(file)
    if dashboard:
        if not sys.stdout.isatty():
            raise click.UsageError("--dashboard needs a terminal")
        from tracer.render.replay_view import run
        run(reader, speed)
        if reader.damage:
            raise DamagedInput(f"{file}: {reader.damage}")
        return
    clock = clock_of(reader.header)
    sampled = Sampled()
    names = names_of(reader)
    pacer = Pacer(speed)
    out = Output(sys.stdout)
    wanted = set(families) if families else None
    trailer = None
    as_json = JsonLines(clock, sampled, names)
    for kind, item in stream(reader, sampled):
        if kind == "trailer":
            trailer = item
            continue
        lines = []
        for e in item:
            if wanted and e.family_name not in wanted:
                continue
            pacer.wait_for(e.ts_ns)
            lines.append(as_json(e) if as_jsonl
                         else text(e, clock, sampled, names))
            if speed > 0:               # paced: one line at a time, as it would have appeared
                out.write(lines.pop() + "\n")
        if lines:
            out.write("\n".join(lines) + "\n")
    totals = (trailer or {}).get("totals")
    if totals:
        out.write((json.dumps(totals) if as_jsonl else text_from_json(totals, recorded=True)) + "\n")
    elif not as_jsonl:
        # no trailer: the recorder never closed the file (SIGKILL, a crash, a full disk)
        how = (f"the recorder stopped ({ended(trailer.get('stop_reason'))})" if trailer else
               "no trailer: the recorder was killed or its disk filled; read up to the last complete block")
        out.write(f"tcpoom: end of the recording: {how}\n")
    if reader.damage:
        raise DamagedInput(f"{file}: {reader.damage}")
