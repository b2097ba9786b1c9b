"""Framing between the daemon and its workers: `u32 length | u8 kind | body`.

Length counts the kind byte and the body. Bodies are orjson arrays, except
DONE, whose body is `u8 id length | job id | raw result JSON` so a result is
never decoded and re-encoded on its way to the WAL.
"""
from __future__ import annotations

import select
import socket
import struct

# daemon → worker
RUN = ord("R")          # [job_id, handler, args, kwargs, attempt, tags]
CANCEL = ord("C")       # job id (utf-8)
STOP = ord("S")         # finish the current job, then exit
DROP = ord("X")         # job id: do not run this job sent ahead (it was cancelled)
# worker → daemon
READY = ord("Y")        # [pid, rss_bytes]
HEARTBEAT = ord("H")    # [rss_bytes]
PROGRESS = ord("P")     # [job_id, current, total, message]
DONE = ord("D")         # see pack_done
FAIL = ord("F")         # [job_id, kind, error, retry_after]; kind: jobd/core/lifecycle.py FAIL_*
LOG = ord("L")          # see pack_done: job id + raw UTF-8 output the job wrote
DROPPED = ord("x")      # [job_id, ran]: answer to DROP; ran = it had started before the DROP came


_LEN = struct.Struct("<IB")
HEADER = _LEN.size
MAX_FRAME = 1 << 31


def frame(kind: int, body: bytes) -> bytes:
    return _LEN.pack(len(body) + 1, kind) + body


def pack_done(job_id: str, result: bytes) -> bytes:
    raw = job_id.encode()
    return bytes((len(raw),)) + raw + result


def unpack_done(body: bytes | memoryview) -> tuple[str, bytes]:
    n = body[0]
    return bytes(body[1:1 + n]).decode(), bytes(body[1 + n:])


def parse(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete frames at the start of `buf`, and how many bytes they used."""
    out = []
    off = 0
    size = len(buf)
    unpack = _LEN.unpack_from
    while size - off >= HEADER:
        n, kind = unpack(buf, off)
        end = off + 4 + n
        if end > size:
            break
        out.append((kind, bytes(buf[off + HEADER:end])))
        off = end
    return out, off


class FrameReader:
    """Blocking frame reader for the worker side."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.frames: list[tuple[int, bytes]] = []
        self.scratch = memoryview(bytearray(256 * 1024))   # reused: no 1 MiB malloc per read
        # Wait in poll(POLLIN), not in a blocking recv: a reader asleep in recv
        # is woken (for nothing) each time the daemon consumes what it wrote,
        # and the daemon pays for that wake-up inside its read().
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def buffered(self) -> bool:
        return bool(self.frames)

    def read(self) -> tuple[int, bytes] | None:
        """Next frame, or None at end of stream."""
        while not self.frames:
            self.poller.poll()      # see __init__
            n = self.sock.recv_into(self.scratch)
            if not n:
                return None
            self.buf += self.scratch[:n]
            frames, used = parse(self.buf)
            if used:
                del self.buf[:used]
                self.frames.extend(frames)
        return self.frames.pop(0)
