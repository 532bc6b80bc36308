"""What user space reads from the loaded programs' maps: the per-CPU counters
(the same map in both engines) and the tracepoint tier's TIME_WAIT candidates
(tw_pending, confirmed here once past their window)."""
from __future__ import annotations

import ctypes
import os
import struct
import time
from typing import List, Tuple

from . import libbpf
from tracer.errors import LoadError
from tracer.model.events import CNT_MAX, EVENT_SIZE


def counters(fd: int, ncpus: int) -> List[int]:
    """The per-CPU counter slots of the counters map, summed over CPUs."""
    slot_bytes = CNT_MAX * 8
    buf = ctypes.create_string_buffer(slot_bytes * ncpus)
    key = ctypes.c_uint32(0)
    if libbpf.lib().bpf_map_lookup_elem(fd, ctypes.byref(key), buf) != 0:
        raise LoadError(f"reading counters: {os.strerror(libbpf.last_errno())}")
    totals = [0] * CNT_MAX
    raw = buf.raw
    for cpu in range(ncpus):
        vals = struct.unpack_from(f"<{CNT_MAX}Q", raw, cpu * slot_bytes)
        totals = [a + b for a, b in zip(totals, vals)]
    return totals


def settle_tw_pending(fd: int, window_s: float) -> Tuple[List[bytes], int]:
    """The TIME_WAIT candidates in tw_pending (map `fd`) older than `window_s`,
    taken out of the map (so a late cancel in the kernel can no longer count
    them) and returned as raw records; the number of younger ones second."""
    l = libbpf.lib()
    key, nxt = ctypes.c_uint64(0), ctypes.c_uint64(0)
    value = ctypes.create_string_buffer(EVENT_SIZE)
    keys = []
    prev = None
    while l.bpf_map_get_next_key(fd, prev, ctypes.byref(nxt)) == 0:
        keys.append(nxt.value)
        key.value = nxt.value
        prev = ctypes.byref(key)
        if len(keys) > 1 << 20:
            break
    now = time.monotonic_ns()
    confirmed, young = [], 0
    for k in keys:
        key.value = k
        if l.bpf_map_lookup_elem(fd, ctypes.byref(key), value) != 0:
            continue        # cancelled or confirmed by the kernel meanwhile
        record = value.raw[:EVENT_SIZE]
        if now - struct.unpack_from("<Q", record, 0)[0] < window_s * 1e9:
            young += 1
        elif l.bpf_map_delete_elem(fd, ctypes.byref(key)) == 0:
            confirmed.append(record)
    return confirmed, young
