"""Turn recordings into a report: what happened, when, which limit, how close,
who, and what to change. Needs no root and no BPF: run it anywhere. Several
files of one host (a --rotate ring) are read as one recording; files of
several hosts are reported side by side.

\b
Examples:
  tcpoom report incident.tcpoom
  tcpoom report incident.tcpoom --format html -o incident.html
  tcpoom report /var/tmp/ring.0000*   # a --rotate ring as one recording
  tcpoom report web1.tcpoom web2.tcpoom --format markdown"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Tuple

import click

from tracer import outfile
from tracer.model import tracefile as tf
from tracer.model.aggregate import Aggregate
from tracer.errors import DamagedInput
from tracer.model.fold import fold
from tracer.analysis.report import build
from tracer.render.reporters import FORMATS, render


def read_recordings(paths: List[str], progress: bool = False,
                    warnings: Optional[List[str]] = None) -> Tuple[List[dict], List[str]]:
    """Report models, one per host, and the damage found (one line each).
    A recording given twice (the same path, a link or a copy) is read once;
    `warnings` gets a line for each one left out."""
    readers = [tf.TraceReader(p) for p in paths]        # bad files fail here, before any work
    readers = _once_each(readers, warnings if warnings is not None else [])
    groups: Dict[str, List[tf.TraceReader]] = {}
    for r in readers:
        groups.setdefault(r.header.get("hostname") or r.path, []).append(r)
    models, damage = [], []
    total = sum(r.size for r in readers)
    bar = _Progress(total) if progress and total > 32 << 20 else None
    for host, rs in groups.items():
        rs.sort(key=lambda r: (r.header.get("clock") or {}).get("monotonic_ns", 0))
        agg = Aggregate(rs[0].header)
        for r in rs:
            fold(agg, r, bar.advance if bar else None)
            if r.damage:
                agg.damage.append(f"{r.path}: {r.damage}")
                damage.append(f"{r.path}: {r.damage}")
            if bar:
                bar.next_file(r.size)
            r.close()
        models.append(build(agg, [r.path for r in rs]))
    if bar:
        bar.close()
    return models, damage


def _once_each(readers: List[tf.TraceReader], warnings: List[str]) -> List[tf.TraceReader]:
    """One reader per recording: two files with the same identity (header and
    first block, tracefile.identity) are the same recording, whatever their
    names; the longest copy is kept (a copy taken mid-recording is shorter)."""
    best: Dict[str, tf.TraceReader] = {}
    order: List[str] = []
    for r in readers:
        key = r.identity()
        if key not in best:
            best[key] = r
            order.append(key)
            continue
        keep, drop = (r, best[key]) if r.size > best[key].size else (best[key], r)
        best[key] = keep
        warnings.append(f"{drop.path} given twice: counted once" if drop.path == keep.path else
                        f"{drop.path} is the same recording as {keep.path}: counted once")
        drop.close()
    return [best[k] for k in order]


class _Progress:
    """A transient progress bar on stderr for large files."""

    def __init__(self, total: int):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
        self.p = Progress(TextColumn("reading"), BarColumn(), DownloadColumn(), transient=True,
                          console=__import__("rich.console").console.Console(stderr=True))
        self.task = self.p.add_task("read", total=total)
        self.done = 0
        self.p.start()

    def advance(self, offset: int) -> None:
        self.p.update(self.task, completed=self.done + offset)

    def next_file(self, size: int) -> None:
        self.done += size

    def close(self) -> None:
        self.p.stop()


@click.command(help=__doc__, short_help='Report recordings: which limit, who, what to change.')
@click.argument("files", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True)
@click.option("-o", "--output", help="Write here instead of stdout (never over an input; an existing "
                                      "recording only with --force).")
@click.option("--force", is_flag=True, help="Replace an existing recording at --output.")
@click.option("--width", type=click.IntRange(min=60), default=None, help="Terminal report width.")
def report(files: Tuple[str, ...], fmt: str, output: Optional[str], force: bool, width: Optional[int]) -> None:
    if output:
        outfile.check(output, files, force)     # before any work, and before anything is written
    warnings: List[str] = []
    models, damage = read_recordings(list(files), progress=sys.stderr.isatty(), warnings=warnings)
    for w in warnings:
        print(f"tcpoom: warning: {w}", file=sys.stderr)
    if fmt == "terminal" and not output and sys.stdout.isatty() and width is None:
        from tracer.render.reporters.terminal import print_to_terminal
        print_to_terminal(models)
    else:
        text = render(fmt, models, width or 100)
        if output:
            with outfile.atomic_text(output, files, force) as f:
                f.write(text)
        else:
            sys.stdout.write(text)
    if damage:
        raise DamagedInput("; ".join(damage))
