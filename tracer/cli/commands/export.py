"""Export a recording's events for jq, pandas or DuckDB: JSON Lines (the same
objects as `tcpoom trace --json`) or CSV (the same fields, one column each).
docs/events.md describes every field.

\b
Examples:
  tcpoom export incident.tcpoom | jq -r .time
  tcpoom export incident.tcpoom --format csv -o events.csv
  duckdb -c "select family, count(*) from 'events.csv' group by 1"
"""
from __future__ import annotations

import csv
import sys
from typing import Optional

import click

from tracer import outfile
from tracer.model import tracefile as tf
from tracer.model.event_schema import NAMES, csv_row
from tracer.model.samples import Sampled
from tracer.render.jsonl import JsonLines
from tracer.render.lines import as_json
from tracer.model.playback import clock_of, names_of, stream
from tracer.errors import DamagedInput

CSV_COLUMNS = NAMES         # one column per field of the event schema (docs/events.md)


@click.command(help=__doc__, short_help='Export events as JSON Lines or CSV (docs/events.md).')
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("-o", "--output", help="Write here instead of stdout (never over the input; an existing "
                                      "recording only with --force).")
@click.option("--force", is_flag=True, help="Replace an existing recording at --output.")
def export(file: str, fmt: str, output: Optional[str], force: bool) -> None:
    if output:
        outfile.check(output, [file], force)
    reader = tf.TraceReader(file)
    if output:
        with outfile.atomic_text(output, [file], force, newline="") as out:
            _write(reader, fmt, out)
    else:
        _write(reader, fmt, sys.stdout)
        sys.stdout.flush()
    if reader.damage:
        raise DamagedInput(f"{file}: {reader.damage}")


def _write(reader: tf.TraceReader, fmt: str, out) -> None:
    clock = clock_of(reader.header)
    sampled = Sampled()
    names = names_of(reader)
    writer = csv.writer(out) if fmt == "csv" else None
    jsonl = JsonLines(clock, sampled, names)
    if writer:
        writer.writerow(CSV_COLUMNS)
    for kind, item in stream(reader, sampled):
        if kind != "events":
            continue
        if writer:
            writer.writerows(csv_row(as_json(e, clock, sampled, names)) for e in item)
        else:
            out.write("".join(jsonl(e) + "\n" for e in item))
