"""The WAL record codec and log scanning (pure functions; no I/O policy).

A record is a 10-byte header followed by an orjson payload:

    magic  u16 LE  0x4A44 ("DJ" on disk)
    length u32 LE  payload bytes
    crc    u32 LE  zlib.crc32(payload, length)  -- the length seeds the CRC

See docs/wal.md for the record types and the recovery rules.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

MAGIC = 0x4A44
HEADER = struct.Struct("<HII")
HEADER_SIZE = HEADER.size
MAX_RECORD = 1 << 31          # sanity bound when scanning a damaged file

_pack = HEADER.pack
_unpack_from = HEADER.unpack_from
_crc32 = zlib.crc32
_dumps = orjson.dumps
_loads = orjson.loads


def encode(obj: Any) -> bytes:
    """One framed record."""
    payload = _dumps(obj)
    n = len(payload)
    return _pack(MAGIC, n, _crc32(payload, n)) + payload


def encode_into(buf: bytearray, obj: Any) -> int:
    """Append one framed record to `buf`; returns its size. Hot path."""
    payload = _dumps(obj)
    n = len(payload)
    buf += _pack(MAGIC, n, _crc32(payload, n))
    buf += payload
    return n + HEADER_SIZE


class CorruptLog(Exception):
    """Damage before the tail of a log: refusing to guess what was lost."""


@dataclass
class Scan:
    """What scanning one file found."""
    records: list[Any]
    good_end: int          # offset just past the last good record
    size: int              # file size
    damage: str | None     # why scanning stopped early, if it did
    count: int = 0         # records decoded

    @property
    def tail_bytes(self) -> int:
        return self.size - self.good_end


def _record_at(data: bytes | memoryview, off: int, size: int) -> tuple[int, int] | None:
    """(payload start, payload end) of a well-formed record at `off`, else None."""
    if off + HEADER_SIZE > size:
        return None
    magic, n, crc = _unpack_from(data, off)
    start = off + HEADER_SIZE
    end = start + n
    if magic != MAGIC or end > size or n > MAX_RECORD:
        return None
    if _crc32(data[start:end], n) != crc:
        return None
    return start, end


def scan(data: bytes, sink: Callable[[Any], None] | None = None, start: int = 0) -> Scan:
    """Decode records from `start` until the first bad one.

    With `sink`, each record is handed to it as it is decoded (replay keeps
    no list of a million records); otherwise they are collected in `records`.
    """
    size = len(data)
    view = memoryview(data)
    records: list[Any] = []
    append = sink or records.append
    off = start
    damage = None
    unpack, crc32, loads = _unpack_from, _crc32, _loads      # the replay loop: inlined
    count = 0
    while off < size:
        end = off + HEADER_SIZE
        if end > size:
            damage = f"truncated record header at offset {off}"
            break
        magic, n, crc = unpack(data, off)
        start, end = end, end + n
        if magic != MAGIC or end > size:
            damage = f"bad record header at offset {off}"
            break
        payload = view[start:end]
        if crc32(payload, n) != crc:
            damage = f"bad record checksum at offset {off}"
            break
        try:
            append(loads(payload))
        except orjson.JSONDecodeError:
            damage = f"undecodable record at offset {off}"
            break
        count += 1
        off = end
    return Scan(records, off, size, damage, count)


def next_good_record(data: bytes, start: int) -> int | None:
    """Offset of the first well-formed record after `start`, if any.

    Used to tell a torn tail (nothing valid follows the damage: safe to cut)
    from corruption in the middle (valid records follow: refuse to start).
    """
    size = len(data)
    view = memoryview(data)
    magic = struct.pack("<H", MAGIC)
    off = data.find(magic, start + 1)
    while off != -1:
        if _record_at(view, off, size) is not None:
            return off
        off = data.find(magic, off + 1)
    return None
