"""jobd/storage/codec.py: what tests/test_wal_codec.py leaves out: scanning
from an offset (after a file's header), the size `encode_into` reports, the
reason each kind of damage is given, a well-framed record that is not JSON,
and `next_good_record` passing over bytes that only look like a header.
"""
from __future__ import annotations

import struct
import zlib

import pytest

from jobd.storage import codec


def frame(payload: bytes, magic: int = codec.MAGIC, length: int | None = None,
          crc: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return codec.HEADER.pack(magic, n, zlib.crc32(payload, n) if crc is None else crc) + payload


def test_the_header_is_ten_bytes_magic_length_and_a_length_seeded_crc():
    data = codec.encode(["S", 1])
    magic, n, crc = struct.unpack_from("<HII", data)
    assert codec.HEADER_SIZE == 10 and data[:2] == b"DJ"
    assert (magic, n) == (codec.MAGIC, len(data) - 10)
    assert crc == zlib.crc32(data[10:], n) != zlib.crc32(data[10:])


def test_encode_into_appends_and_returns_the_framed_size():
    buf = bytearray(b"xyz")
    size = codec.encode_into(buf, {"a": [1, 2]})
    assert size == len(buf) - 3
    assert bytes(buf[3:]) == codec.encode({"a": [1, 2]})


def test_scan_from_an_offset_skips_what_is_before_it():
    first, second, third = (codec.encode(r) for r in (["V", 2], ["S", "a"], ["C", "a"]))
    data = first + second + third
    found = codec.scan(data, start=len(first))
    assert found.records == [["S", "a"], ["C", "a"]]
    assert (found.count, found.good_end, found.damage) == (2, len(data), None)
    assert codec.scan(data, start=len(data)).records == []


def test_scan_from_an_offset_reports_damage_at_its_absolute_offset():
    first, second = codec.encode(["V", 2]), codec.encode(["S", "a"])
    data = first + second + b"\x44"          # one byte of a next header
    found = codec.scan(data, start=len(first))
    assert found.records == [["S", "a"]]
    assert found.good_end == len(first) + len(second)
    assert found.damage == f"truncated record header at offset {found.good_end}"
    assert found.tail_bytes == 1


@pytest.mark.parametrize("tail,why", [
    (frame(b"[1]", magic=0x1234), "bad record header"),
    (frame(b"[1]", length=99), "bad record header"),            # longer than the file
    (frame(b"[1]", crc=0), "bad record checksum"),
    (frame(b"[1,"), "undecodable record"),                      # framed well, not JSON
    (b"DJ\x01", "truncated record header"),
])
def test_each_kind_of_damage_is_named_with_its_offset(tail, why):
    good = codec.encode(["S", 1])
    found = codec.scan(good + tail)
    assert found.records == [["S", 1]] and found.count == 1
    assert found.damage == f"{why} at offset {len(good)}"
    assert found.good_end == len(good) and found.size == len(good) + len(tail)


def test_a_sink_gets_the_records_and_count_still_counts_them():
    seen: list[object] = []
    data = codec.encode([1]) + codec.encode([2]) + frame(b"{")
    found = codec.scan(data, seen.append)
    assert seen == [[1], [2]] and found.records == [] and found.count == 2
    assert found.damage is not None and found.damage.startswith("undecodable record")


def test_next_good_record_passes_over_a_false_magic():
    fake = frame(b"[1]", crc=0)              # magic and length right, checksum wrong
    real = codec.encode(["S", "x"])
    data = b"\x00" + fake + b"DJDJ" + real
    off = codec.next_good_record(data, 0)
    assert off == len(data) - len(real)
    assert codec.next_good_record(data, off) is None


def test_next_good_record_looks_strictly_after_start():
    data = codec.encode([1]) + codec.encode([2])
    assert codec.next_good_record(data, 0) == len(codec.encode([1]))
