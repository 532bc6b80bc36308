"""The trace file: append-only, versioned, self-describing, torn-write safe.

    file   := magic block*
    magic  := b"TCPOOM\\r\\n" u16 major u16 minor u32 reserved          (16 bytes)
    block  := u8 type, u8 flags, u16 reserved, u32 length, u32 crc32,
              u32 raw_length, payload[length]                          (16 + length)

Every block carries its length and a CRC-32 of its stored payload, so a reader
stops cleanly at the first torn or damaged block and everything before it
stays readable. docs/trace-format.md is the specification.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Iterator, List, Optional, Tuple

from tracer.errors import TcpoomError
from . import events as ev

MAGIC = b"TCPOOM\r\n"
VERSION = (1, 1)     # 1.1: cgroups blocks; records grew the owner fields at their end
_MAGIC = struct.Struct("<8sHHI")
_BLOCK = struct.Struct("<BBHIII")
MAX_BLOCK = 64 << 20            # a length above this is damage, not data

HEADER, EVENTS, SNAPSHOT, HOLDERS, COUNTERS, LOSS, TRAILER, CGROUPS = 1, 2, 3, 4, 5, 6, 7, 8
BLOCK_NAMES = {HEADER: "header", EVENTS: "events", SNAPSHOT: "snapshot", HOLDERS: "holders",
               COUNTERS: "counters", LOSS: "loss", TRAILER: "trailer", CGROUPS: "cgroups"}
JSON_BLOCKS = (HEADER, SNAPSHOT, HOLDERS, COUNTERS, LOSS, TRAILER, CGROUPS)
FLAG_ZLIB = 1
_EVENTS_HEAD = struct.Struct("<IIII")   # record size, count, stride, offset of a record in its stride


class TraceFileError(TcpoomError):
    """A trace file that cannot be read at all."""


class NotATraceFile(TraceFileError):
    pass


class EmptyTraceFile(TraceFileError):
    pass


class UnsupportedVersion(TraceFileError):
    pass


class TruncatedTrace(TraceFileError):
    """Cut short before its header was complete."""


# ------------------------------------------------------------------ writing

def magic_bytes() -> bytes:
    return _MAGIC.pack(MAGIC, VERSION[0], VERSION[1], 0)


def encode_block(btype: int, payload: bytes, compress: bool = False) -> bytes:
    raw_len = len(payload)
    flags = 0
    if compress:
        packed = zlib.compress(payload, 1)
        if len(packed) < raw_len:
            payload, flags = packed, FLAG_ZLIB
    return _BLOCK.pack(btype, flags, 0, len(payload), zlib.crc32(payload), raw_len) + payload


def encode_json(btype: int, obj, compress: bool = False) -> bytes:
    return encode_block(btype, json.dumps(obj, separators=(",", ":")).encode(), compress)


def encode_events(payload: bytes, record_size: int, count: int, compress: bool = False,
                  stride: int = 0, skip: int = 0) -> bytes:
    return encode_block(EVENTS, _EVENTS_HEAD.pack(record_size, count, stride or record_size, skip) + payload,
                        compress)


def encode_events_parts(pieces: List[bytes], record_size: int, count: int, stride: int,
                        skip: int) -> List[bytes]:
    """An uncompressed EVENTS block as buffers to write in a row (os.writev):
    the same bytes as encode_events(b"".join(pieces), ...), without copying
    the records into one buffer first."""
    head = _EVENTS_HEAD.pack(record_size, count, stride, skip)
    crc = zlib.crc32(head)
    length = len(head)
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
        length += len(piece)
    return [_BLOCK.pack(EVENTS, 0, 0, length, crc, length) + head, *pieces]


# ------------------------------------------------------------------ reading

class Block:
    __slots__ = ("type", "offset", "payload", "_obj")

    def __init__(self, btype: int, offset: int, payload: bytes):
        self.type, self.offset, self.payload = btype, offset, payload
        self._obj = None

    @property
    def name(self) -> str:
        return BLOCK_NAMES.get(self.type, f"type{self.type}")

    def json(self):
        if self._obj is None:
            self._obj = json.loads(self.payload)
        return self._obj

    def events(self) -> Tuple[int, int, memoryview, int, int]:
        """(record size, count, records, stride, skip) of an EVENTS block: record
        i is the `size` bytes at i * stride + skip of `records`."""
        size, count, stride, skip = _EVENTS_HEAD.unpack_from(self.payload, 0)
        records = memoryview(self.payload)[_EVENTS_HEAD.size:_EVENTS_HEAD.size + stride * count]
        if size in ev.OLDER_SIZES:
            # a 1.0 record is a prefix of today's: the fields added since read 0
            records = ev.widen(records, size, count, stride, skip)
            size, stride, skip = ev.EVENT_SIZE, ev.STRIDE, ev.FRAME
        return size, count, records, stride, skip


def _header_damage(head: bytes, offset: int, index: int) -> Optional[str]:
    if len(head) < _BLOCK.size:
        return f"TruncatedTrace: cut short in the header of block {index} (byte {offset})"
    btype, _, _, length, _, raw_len = _BLOCK.unpack(head)
    if length > MAX_BLOCK or raw_len > MAX_BLOCK or btype == 0:
        return f"CorruptBlock: implausible block header at byte {offset}"
    return None


def read_block(f, index: int) -> Tuple[Optional[Block], Optional[str]]:
    """The block at f's position, checked (length, checksum, compression):
    (block, None), or (None, what is wrong), or (None, None) at the end."""
    offset = f.tell()
    head = f.read(_BLOCK.size)
    if not head:
        return None, None
    damage = _header_damage(head, offset, index)
    if damage:
        return None, damage
    btype, flags, _, length, crc, raw_len = _BLOCK.unpack(head)
    payload = f.read(length)
    if len(payload) < length:
        return None, f"TruncatedTrace: cut short in block {index} (byte {offset}); read up to there"
    if zlib.crc32(payload) != crc:
        return None, f"CorruptBlock: checksum mismatch in block {index} (byte {offset})"
    if flags & FLAG_ZLIB:
        try:
            payload = zlib.decompress(payload)
        except zlib.error:
            return None, f"CorruptBlock: bad compressed data in block {index}"
    if len(payload) != raw_len:
        return None, f"CorruptBlock: length mismatch in block {index} (byte {offset})"
    return Block(btype, offset, payload), None


def check(b: Block) -> Optional[str]:
    """What is wrong with a block's content, if anything."""
    if b.type == EVENTS:
        try:
            size, count, stride, skip = _EVENTS_HEAD.unpack_from(b.payload, 0)
        except struct.error:
            return f"CorruptBlock: events block at byte {b.offset} too short"
        if skip + size > stride or stride * count + _EVENTS_HEAD.size > len(b.payload):
            return f"CorruptBlock: events block at byte {b.offset} shorter than its count"
    elif b.type in JSON_BLOCKS:
        try:
            b.json()
        except ValueError:
            return f"CorruptBlock: {b.name} block at byte {b.offset} is not JSON"
    return None


class TraceReader:
    """Reads blocks up to the end, or up to the first torn or damaged block
    (then `damage` says where and why)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._f = open(path, "rb")
        except OSError as e:
            raise TraceFileError(f"{path}: {e.strerror}") from None
        self.size = os.fstat(self._f.fileno()).st_size
        self.damage: Optional[str] = None
        self.blocks_read = 0
        head = self._f.read(_MAGIC.size)
        if not head:
            raise EmptyTraceFile(f"{path}: EmptyTraceFile: the file is empty")
        if len(head) < _MAGIC.size or not head.startswith(MAGIC):
            if MAGIC.startswith(head[:len(MAGIC)]) and len(head) < _MAGIC.size:
                raise TruncatedTrace(f"{path}: TruncatedTrace: cut short inside the file header")
            raise NotATraceFile(f"{path}: NotATraceFile: no tcpoom trace magic at the start")
        _, major, minor, _ = _MAGIC.unpack(head)
        self.version = (major, minor)
        if major != VERSION[0]:
            raise UnsupportedVersion(
                f"{path}: UnsupportedVersion: format {major}.{minor}, this tcpoom reads {VERSION[0]}.x"
                + (": upgrade tcpoom" if major > VERSION[0] else ""))
        first = next(self._blocks(), None)
        if first is None or first.type != HEADER:
            # the damage line names its own kind (TruncatedTrace:, CorruptBlock:)
            raise TruncatedTrace(f"{path}: {self.damage or 'TruncatedTrace: no header block'}")
        try:
            self.header = first.json()
        except ValueError:
            raise TruncatedTrace(f"{path}: TruncatedTrace: header block is not JSON") from None
        self._after_header = self._f.tell()

    def identity(self) -> str:
        """What makes two files the same recording, whatever their names: the
        header (host, clock pair, command line) and the first block after it.
        The files of one --rotate ring share a header but not a first block."""
        import hashlib
        h = hashlib.sha256(json.dumps(self.header, sort_keys=True).encode())
        self._f.seek(self._after_header)
        block, _ = read_block(self._f, 2)
        if block is not None:
            h.update(bytes([block.type]))
            h.update(block.payload)
        return h.hexdigest()

    def _blocks(self) -> Iterator[Block]:
        f = self._f
        while True:
            block, damage = read_block(f, self.blocks_read + 1)
            if damage:
                self.damage = damage
            if block is None:
                return
            self.blocks_read += 1
            yield block

    def blocks(self) -> Iterator[Block]:
        """Every block after the header, in file order."""
        self._f.seek(self._after_header)
        self.blocks_read = 1
        self.damage = None
        for b in self._blocks():
            damage = check(b)
            if damage:
                self.damage = damage
                return
            yield b

    def block_offsets(self) -> List[Tuple[int, int]]:
        """(offset, type) of every block after the header, from their headers
        alone (payloads are skipped, not read): where parallel readers start.
        A structurally torn block ends the list, and `damage` says so; the
        checksums are left to whoever reads the payloads."""
        f = self._f
        out: List[Tuple[int, int]] = []
        offset = self._after_header
        self.damage = None
        while offset < self.size:
            f.seek(offset)
            head = f.read(_BLOCK.size)
            index = len(out) + 2
            damage = _header_damage(head, offset, index)
            if damage is None and offset + _BLOCK.size + _BLOCK.unpack(head)[3] > self.size:
                damage = f"TruncatedTrace: cut short in block {index} (byte {offset}); read up to there"
            if damage:
                self.damage = damage
                break
            out.append((offset, head[0]))
            offset += _BLOCK.size + _BLOCK.unpack(head)[3]
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "TraceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
