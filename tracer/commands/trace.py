"""Attach and print every TCP socket-memory event as it happens, one line each,
unrate-limited. On exit (Ctrl-C, SIGTERM, --duration, --count) print the
in-kernel totals next to the kernel's own TcpExt counters over the same
interval, and the loss counters."""
from __future__ import annotations

import json
import os
import sys
from typing import Callable, Optional, Tuple

import click

from ..capture import Capture, Stop
from ..events import Event, at
from ..lines import Clock, as_json, text
from ..loader import RINGBUF_DEFAULTS
from .options import capture_options, filters_from


class Output:
    """Writes straight to the file descriptor, finishing partial writes itself.
    A stop signal arriving while a full pipe blocks the write must neither cut
    a line nor repeat one (buffered text streams can do either)."""

    def __init__(self, stream):
        stream.flush()
        self.fd = stream.fileno()

    def write(self, text: str) -> None:
        data = memoryview(text.encode())
        while data:
            n = os.write(self.fd, data)
            data = data[n:]


def _json_encoder() -> Callable[[dict], str]:
    """json.dumps for one object after another: json.dumps builds a new C
    encoder for every call, about a tenth of a storm's cost per event. Made
    once here with what json.dumps passes (its output is the same for
    acyclic objects); json.dumps where the C encoder is missing."""
    from json import encoder
    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    d = json.JSONEncoder(check_circular=False)
    encode = make(None, d.default, encoder.encode_basestring_ascii, None, d.key_separator,
                  d.item_separator, d.sort_keys, d.skipkeys, d.allow_nan)
    return lambda obj: "".join(encode(obj, 0))


def _start_line(cap: Capture) -> str:
    parts = []
    for fam in cap.families:
        fp = cap.plan.families[fam]
        parts.append(f"{fam} ({fp.method} {fp.target})")
    where = f" in netns {cap.filters.netns}" if cap.filters.netns else ""
    return f"tcpoom: tracing {', '.join(parts)}{where}. Ctrl-C to stop."


@click.command(help=__doc__)
@click.option("--json", "as_jsonl", is_flag=True, help="JSON Lines: one object per event, then one totals object.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@capture_options(ringbuf_default=RINGBUF_DEFAULTS["trace"])
def trace(as_jsonl: bool, duration: Optional[float], count: Optional[int], netns: Optional[str],
          pid: Optional[int], port: Optional[int], families: Tuple[str, ...], ringbuf_size: int,
          engine: str, synthetic_pid: int) -> None:
    filters = filters_from(netns, pid, port, families, ringbuf_size)
    cap = Capture(filters, ringbuf_size, synthetic_pid=synthetic_pid, engine=engine)
    clock = Clock.now()
    out = Output(sys.stdout)
    wanted = set(cap.families)
    dumps = _json_encoder()

    printed = [0]

    def sink(payload: bytes, n: int) -> int:
        lines = []
        decode, sampled = Event.decode, cap.sampled
        # a batch holds up to a poll period of a storm: --count stops inside it
        room = count - printed[0] if count is not None else n
        for i in range(n):
            if len(lines) >= room:
                break
            e = decode(payload, at(i))
            if e.family_name not in wanted:
                continue
            if as_jsonl:
                lines.append(dumps(as_json(e, clock, sampled)))
            else:
                lines.append(text(e, clock, sampled))
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
