"""Dump a trace file block by block, for debugging: offsets, types, sizes, the
header and snapshots as JSON, and with --records every event record's raw
fields.

\b
Examples:
  tcpoom parse incident.tcpoom
  tcpoom parse incident.tcpoom --records | less"""
from __future__ import annotations

import json

import click

from tracer.model import events as ev
from tracer.model import tracefile as tf
from tracer.errors import DamagedInput


@click.command(help=__doc__, short_help='Dump a recording block by block (debugging).')
@click.argument("file")
@click.option("--records", is_flag=True, help="Also print every event record, field by field.")
def parse(file: str, records: bool) -> None:
    reader = tf.TraceReader(file)
    click.echo(f"{file}: tcpoom trace format {reader.version[0]}.{reader.version[1]}, {reader.size} bytes")
    click.echo(f"block 1 @ 16: header {json.dumps(reader.header, sort_keys=True)[:2000]}")
    n = 1
    for b in reader.blocks():
        n += 1
        if b.type == tf.EVENTS:
            size, count, recs, stride, skip = b.events()
            click.echo(f"block {n} @ {b.offset}: events: {count} records of {size} bytes, "
                       f"{stride} apart from byte {skip}")
            if records and size == ev.EVENT_SIZE:
                for i in range(count):
                    e = ev.Event.decode(recs, i * stride + skip)
                    fields = {name: getattr(e, name) for name in ev.Event.__slots__}
                    fields["comm"] = e.comm_str
                    fields["saddr"], fields["daddr"] = e.local, e.remote
                    click.echo("  " + json.dumps(fields))
        else:
            click.echo(f"block {n} @ {b.offset}: {b.name} {json.dumps(b.json(), sort_keys=True)[:2000]}")
    click.echo(f"{n} blocks" + (f"; stopped early: {reader.damage}" if reader.damage else "; clean end"))
    if reader.damage:
        raise DamagedInput(f"{file}: {reader.damage}")
