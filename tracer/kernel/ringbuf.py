"""A BPF ring buffer consumer over mmap, without a Python call per event.

Layout (kernel/bpf/ringbuf.c, stable since 5.8): page 0 holds the consumer
position (mapped writable), page 1 the producer position, then the data pages.
The kernel offers the data pages twice in a row, so that a record that wraps
reads contiguously; this consumer maps them once and copies a wrapping span in
two pieces, because every mapped page counts in the tracer's RSS (a 16 MiB
ring mapped twice is 32 MB of it). Each record has an 8-byte header: length
with a BUSY bit (not yet committed) and a DISCARD bit.

Wakeups: the programs write silently (BPF_RB_NO_WAKEUP) while the ring is
less than 1/WAKEUP_FILL_DIVISOR full and force a wakeup above that
(bpf/tcpoom.h). The consumer reads every POLL_PERIOD_S, or at once when the
ring reaches that mark: at real event rates (tens of thousands a second, one
at a time) a wakeup per record would cost more than the records themselves.
"""
from __future__ import annotations

import mmap
import select
import struct
import time
from typing import List, Tuple

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
# Native formats on purpose: struct unpacks native "Q"/"I" with one memcpy of
# the whole word (a single load), while the standard "<Q" goes byte by byte;
# a torn load of the producer position could read records not yet written.
# The consumer position is stored with one 8-byte copy (_store), never with
# struct.pack_into, which first zeroes its target: the kernel would see the
# consumer at 0 for an instant, think the ring full, and drop events.
_U64 = struct.Struct("Q")
_U32 = struct.Struct("I")

#: how often the consumer reads a ring that is filling slowly: the latency from
#: an event to a line on screen, and the number of batches a second
POLL_PERIOD_S = 0.1
#: mirrors bpf/tcpoom.h: wake the consumer at 1/4 full
WAKEUP_FILL_DIVISOR = 4


class RingBuffer:
    def __init__(self, map_fd: int, size: int):
        page = mmap.PAGESIZE
        self._fd = map_fd
        self._mask = size - 1
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED,
                               mmap.PROT_READ, offset=page)
        self._data = page    # data starts one page into the producer mapping
        self._size = size
        self.wake_bytes = size // WAKEUP_FILL_DIVISOR
        self._ep = select.epoll()
        # edge-triggered: a wakeup is reported once. Level-triggered, epoll
        # would report the ring ready as long as it held a record, and the
        # timed wait below would spin on a ring that is filling slowly.
        self._ep.register(map_fd, select.EPOLLIN | select.EPOLLET)

    def _copy(self, pos: int, length: int) -> bytes:
        """`length` bytes of the ring from position `pos`, across the wrap."""
        start = pos & self._mask
        first = min(length, self._size - start)
        head = self._prod[self._data + start:self._data + start + first]
        if first == length:
            return head
        return head + self._prod[self._data:self._data + length - first]

    def _header(self, pos: int) -> int:
        # headers are 8-byte aligned and the size a power of two: never split
        return _U32.unpack_from(self._prod, self._data + (pos & self._mask))[0]

    def _store(self, cons: int) -> None:
        self._cons[0:8] = _U64.pack(cons)

    def wait(self, timeout: float) -> bool:
        """Sleep `timeout` seconds, or less if the ring fills to the wakeup
        mark: True then (read it at once). A wakeup below the mark (the bcc
        engine forces one every so many records per CPU, whatever the fill;
        an object built before this policy wakes for every record) does not
        end the sleep, so a slow trickle is one batch per period whatever
        the producer does."""
        if self.pending() >= self.wake_bytes:
            return True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._ep.poll(left)
            if self.pending() >= self.wake_bytes:
                return True

    def pending(self) -> int:
        return _U64.unpack_from(self._prod, 0)[0] - _U64.unpack_from(self._cons, 0)[0]

    def read(self, max_records: int = 1 << 30) -> List[bytes]:
        """Take the committed records (copies), up to the first still busy."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        out: List[bytes] = []
        while cons < prod and len(out) < max_records:
            hdr = self._header(cons)
            if hdr & _BUSY:
                break
            length = hdr & ~(_BUSY | _DISCARD)
            if not hdr & _DISCARD:
                out.append(self._copy(cons + _HDR, length))
            cons += (length + _HDR + 7) & ~7
        self._store(cons)
        return out

    def read_raw(self, record_size: int, max_records: int = 16384) -> Tuple[bytes, int]:
        """Take the committed records as one buffer, framing kept (each record
        after its 8-byte ring header, a fixed stride apart), and their count:
        one copy, no Python object per record.

        Every producer writes records of `record_size`, so the committed span
        is a run of equal strides; the headers are checked in bulk. Anything
        unusual (a record still busy, a discarded one, another size) takes the
        slow path, which re-frames what it reads.
        """
        stride = (record_size + _HDR + 7) & ~7
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        span_len = prod - cons
        if span_len <= 0:
            return b"", 0
        if span_len % stride or record_size % 8:
            return self._read_raw_slow(record_size)
        # a bounded batch: the copies below then stay a few MB whatever the backlog
        span_len = min(span_len, max_records * stride)
        prod = cons + span_len
        span = self._copy(cons, span_len)
        count = span_len // stride
        words = stride // 4
        if memoryview(span).cast("I")[0::words].tolist().count(record_size) != count:
            return self._read_raw_slow(record_size)
        self._store(prod)
        return span, count

    def _read_raw_slow(self, record_size: int) -> Tuple[bytes, int]:
        from tracer.model.events import frame_all
        recs = [r for r in self.read() if len(r) == record_size]
        return frame_all(recs), len(recs)

    def close(self) -> None:
        try:
            self._ep.close()
        finally:
            self._cons.close()
            self._prod.close()
