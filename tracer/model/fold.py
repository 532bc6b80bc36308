"""Fold a recording's blocks into an Aggregate, on every core for big files.

Aggregation is what a report spends its time on (about a microsecond an event
in Python), and a recording is a list of independent blocks, so a big file is
cut into runs of whole blocks, each folded by a forked worker, and the
workers' counts are merged in file order. The rules of a damaged file stay
those of the sequential reader: everything before the first torn or damaged
block counts, nothing after it.
"""
from __future__ import annotations

import multiprocessing
import os
from typing import Callable, List, Optional, Tuple

from . import tracefile as tf
from .aggregate import Aggregate

# below this, forking costs more than it saves
PARALLEL_MIN_BYTES = int(os.environ.get("TCPOOM_PARALLEL_MIN_BYTES", 64 << 20))
RUNS_PER_WORKER = 4          # several runs each: the bar moves and the cores stay even


def workers() -> int:
    wanted = os.environ.get("TCPOOM_REPORT_WORKERS")
    if wanted:
        return max(1, int(wanted))
    return len(os.sched_getaffinity(0))


#: set in the parent when a run came back damaged: the workers' later runs
#: then return at once (inherited through fork, read in _fold_run)
_STOP = None


def fold(agg: Aggregate, reader: tf.TraceReader,
         advance: Optional[Callable[[int], None]] = None) -> None:
    """Fold every readable block of `reader` into `agg`; `reader.damage`
    says where reading stopped, if it did. `advance(offset)` reports progress."""
    global _STOP
    n = workers()
    pool = None
    if n > 1 and reader.size >= PARALLEL_MIN_BYTES:
        try:
            ctx = multiprocessing.get_context("fork")
            _STOP = ctx.Event()
            pool = ctx.Pool(n)
        except OSError:
            pool = None         # no /dev/shm for its semaphores, say: one core then
    if pool is None:
        for block in reader.blocks():
            agg.add_block(block)
            if advance:
                advance(block.offset)
        return
    offsets = reader.block_offsets()
    torn = reader.damage
    runs = _runs(offsets, n * RUNS_PER_WORKER)
    damaged = None
    with pool:
        # every result is taken, also after a damaged run: Pool.terminate()
        # while a worker is blocked sending a result bigger than the pipe
        # holds deadlocks (the worker keeps the result queue's lock, which
        # terminate() then waits for). The later runs stop early instead.
        for (start, run), (part, others, damage) in zip(
                runs, pool.imap(_fold_run, [(reader.path, run, start + 2) for start, run in runs])):
            if damaged:
                continue
            agg.merge_events(part)
            for btype, obj in others:
                agg.add_json_block(btype, obj)
            if advance and run:
                advance(run[-1][0])
            if damage:
                damaged = damage
                _STOP.set()
    reader.damage = damaged or torn


def _runs(offsets: List[Tuple[int, int]], count: int) -> List[Tuple[int, List[Tuple[int, int]]]]:
    """Contiguous runs of blocks of about equal bytes: (index of the first, blocks)."""
    if not offsets:
        return []
    end = offsets[-1][0] + 1
    per = max(1, (end - offsets[0][0]) // count)
    runs, start = [], 0
    for i in range(1, len(offsets) + 1):
        if i == len(offsets) or offsets[i][0] - offsets[start][0] >= per:
            runs.append((start, offsets[start:i]))
            start = i
    return runs


def _fold_run(job) -> Tuple[Aggregate, list, Optional[str]]:
    """In a worker: the events of one run folded, its other blocks as parsed
    JSON in order, and the damage that ended it early, if any."""
    path, run, first_index = job
    agg = Aggregate({})
    others: list = []
    if _STOP is not None and _STOP.is_set():
        return agg, others, None        # an earlier run was damaged: this one is not read
    with open(path, "rb") as f:
        for k, (offset, _) in enumerate(run):
            f.seek(offset)
            block, damage = tf.read_block(f, first_index + k)
            if block is not None and damage is None:
                damage = tf.check(block)
            if damage or block is None:
                return agg, others, damage
            if block.type == tf.EVENTS:
                agg.add_block(block)
            else:
                others.append((block.type, block.json() if block.type in tf.JSON_BLOCKS else None))
    return agg, others, None
