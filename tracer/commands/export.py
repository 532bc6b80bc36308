"""Export a recording's events for jq, pandas or DuckDB: JSON Lines (the same
objects as `tcpoom trace --json`) or CSV (one column per record field)."""
from __future__ import annotations

import csv
import json
import sys
from typing import Optional

import click

from .. import events as ev
from .. import outfile
from .. import tracefile as tf
from ..lines import Sampled, as_json
from ..playback import clock_of, stream
from ..errors import DamagedInput

CSV_COLUMNS = ["time", "ts_ns", "family", "method", "pid", "tid", "comm", "cpu", "netns", "af",
               "local", "remote", "state", "caller", "verdict", "shift", "orphans", "max_orphans",
               "memory_allocated", "tcp_mem_low", "tcp_mem_pressure", "tcp_mem_high",
               "wmem_queued", "rmem_alloc", "sndbuf", "rcvbuf", "tw_count", "max_tw_buckets",
               "pressure_since", "reason", "exact", "derived"]


def _csv_row(e: ev.Event, clock) -> list:
    def v(x):
        return "" if x == -1 else x
    return [clock.iso(e.ts_ns), e.ts_ns, e.family_name, e.method_name, e.pid, e.tid, e.comm_str,
            e.cpu, e.netns, e.af, e.local, e.remote, e.state_name,
            e.caller_name if e.family == ev.OOM_CHECK else "", "|".join(e.verdict_names()),
            v(e.shift), v(e.orphans), v(e.max_orphans), v(e.memory_allocated), v(e.tcp_mem0),
            v(e.tcp_mem1), v(e.tcp_mem2), v(e.wmem_queued), v(e.rmem_alloc), v(e.sndbuf),
            v(e.rcvbuf), v(e.tw_count), v(e.max_tw_buckets), v(e.pressure_since), e.reason,
            e.exact, e.derived]


@click.command(help=__doc__)
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
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(CSV_COLUMNS)
    for kind, item in stream(reader, sampled):
        if kind != "events":
            continue
        if writer:
            writer.writerows(_csv_row(e, clock) for e in item)
        else:
            out.write("".join(json.dumps(as_json(e, clock, sampled)) + "\n" for e in item))
