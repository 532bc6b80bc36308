"""Record TCP socket-memory events to a file, with low overhead: raw records
copied in batches, /proc snapshots every second, the sockets holding the most
memory whenever pressure starts. Bounded by time, count or size, or kept as a
ring of files (--rotate/--keep) to leave on as a flight recorder. The file is
readable without root, on any machine: `tcpoom report FILE`.

\b
Examples:
  tcpoom record -o /var/tmp/incident.tcpoom --duration 600
  tcpoom record -o /var/tmp/ring --rotate 64M --keep 8 --compress
  tcpoom record -o old.tcpoom --force  # replace an existing recording"""
from __future__ import annotations

import re
import sys
from typing import Optional, Tuple

import click

from tracer import outfile
from tracer.capture.capture import Capture, Stop
from tracer.capture import who
from tracer.capture.header import header
from tracer.capture.recorder import Recorder, RecordingStopped
from tracer.capture.recording import Recording
from tracer.capture.tick import Tick
from tracer.kernel.loader import RINGBUF_DEFAULTS
from tracer.model.events import EVENT_SIZE
from .options import capture_options, filters_from


def parse_size(text: str) -> int:
    """512K, 100M, 2G, 1.5GiB, or plain bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise click.BadParameter(f"{text!r} is not a size like 512K, 100M or 2G")
    value = int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)])
    if value <= 0:
        raise click.BadParameter("must be positive")
    return value


class Size(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except click.BadParameter as e:
            self.fail(e.message, param, ctx)


@click.command(help=__doc__, short_help='Record events to a file (or a ring of files).')
@click.option("-o", "--output", required=True,
              help="The trace file (with --rotate: its prefix; files get .000001, .000002, ...).")
@click.option("--force", is_flag=True, help="Replace an existing recording (or ring of them) at --output.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--max-size", type=Size(), help="Stop when the file reaches this size (e.g. 100M).")
@click.option("--rotate", type=Size(), help="Start a new file when one reaches this size.")
@click.option("--keep", type=click.IntRange(min=1), help="With --rotate: keep only the newest N files.")
@click.option("--compress", is_flag=True, help="zlib-compress each block.")
@capture_options(ringbuf_default=RINGBUF_DEFAULTS["record"])
@click.option("--quiet", is_flag=True, help="No start and summary lines.")
def record(output: str, duration: Optional[float], count: Optional[int], max_size: Optional[int],
           rotate: Optional[int], keep: Optional[int], compress: bool, netns: Optional[str],
           pid: Optional[int], cgroup_path: Optional[str],
           container: Optional[str], port: Optional[int], families: Tuple[str, ...], ringbuf_size: int,
           engine: str, quiet: bool, synthetic_pid: int, force: bool) -> None:
    if keep and not rotate:
        raise click.UsageError("--keep needs --rotate")
    _check_output(output, rotate, force)    # before loading anything
    filters = filters_from(netns, pid, port, families, ringbuf_size, cgroup_path, container)
    cap = Capture(filters, ringbuf_size, synthetic_pid=synthetic_pid, sample_orphans=False,
                  engine=engine)
    # small batches keep the recorder's memory low; a batch costs ~20 us
    cap.batch_records = 4096
    stop = Stop(duration, count)
    rec: Optional[Recorder] = None
    try:
        cap.start()
        rec = Recorder(output, header(cap, sys.argv), EVENT_SIZE, compress, max_size, rotate, keep or 0,
                       force=force)
        tick = Tick(cap if cap.session is not None else None, filters.netns, missed=cap.missed)
        recording = Recording(rec, cap, tick, stop)
        keep = who.predicate(filters, recording.ids.names)

        def sink(payload: bytes, n: int) -> int:
            if keep is not None:
                payload, n = who.only(payload, n, keep)
            recording.events(payload, n)
            return n

        if not quiet:
            print(f"tcpoom: recording {', '.join(cap.families)} to {output}. Ctrl-C to stop.",
                  file=sys.stderr, flush=True)
        totals = cap.run(sink, stop, tick)
        recording.close(totals)
    except RecordingStopped:
        if rec is not None:
            try:
                rec.close({"stop_reason": "error"})
            except RecordingStopped:
                pass
        raise
    finally:
        cap.close()
    if not quiet:
        per = ", ".join(f"{r['family']} {r['seen']}" for r in totals.rows())
        lost = sum(totals.lost(f) for f in totals.families)
        files = rec.files[-1] if len(rec.files) == 1 else f"{len(rec.files)} files ({rec.files[-1]} last)"
        print(f"tcpoom: recorded {rec.events} events ({per}) in {totals.duration_s:.1f} s to {files}, "
              f"{rec.bytes / 1e6:.1f} MB; lost {lost}; stopped: {totals.stop_reason}", file=sys.stderr)


def _check_output(output: str, rotate: Optional[int], force: bool) -> None:
    """An existing recording, or ring of them, is kept unless --force."""
    import glob
    ring = sorted(glob.glob(glob.escape(output) + ".[0-9][0-9][0-9][0-9][0-9][0-9]")) if rotate else []
    for path in (ring[:1] if rotate else [output]):
        outfile.check(path, (), force)

