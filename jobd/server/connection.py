"""The JSON-lines protocol over a Unix stream socket (docs/protocol.md).

One `Connection` per client. Requests are split on `\\n`, decoded with
orjson and handed to the op table. Replies are answered in request order:
a reply that acknowledges a WAL record waits in the connection's queue until
the journal says that record is durable; replies behind it wait too. Output
is collected during a loop turn and written once per turn.

`result`/`wait` with a wait time and `watch` answer later, out of order.

A client that does not read its replies is not read either: `unsent` counts
the bytes of its replies and events not yet read (held here for durability,
collected this turn, or in the transport's buffer as of the last look).
While it is over `[server] max_unsent_bytes`, the lines already received
wait in `buf` and the socket is not read; they are handled once it drains
to half of that (docs/protocol.md). Replies can wait, so nothing is lost;
events cannot, so a watcher that falls behind is dropped instead (events.py).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import orjson

from jobd import constants as C
from jobd.config import ServerConfig
from jobd.core.values import non_finite_path
from jobd.errors import OpError

# An op: (connection, request id, request) → (reply, journal seq to wait for).
Op = Callable[["Connection", Any, dict[str, Any]], tuple[Any, int]]

log = logging.getLogger("jobd.server")

_dumps = orjson.dumps
_loads = orjson.loads
_PEERCRED = struct.Struct("3i")
NL = b"\n"


def error_reply(req_id: Any, code: str, message: str) -> bytes:
    return _dumps({"id": req_id, "ok": False,
                   "error": {"code": code, "message": message}}) + NL


def _undecodable(line: bytes) -> bytes:
    """The reply to a line orjson refused. A line that is JSON but for NaN,
    Infinity or a number too large for a double (Python's `json` writes
    those) is `invalid_argument` naming where; anything else `bad_request`.
    The error path only: the lenient parse runs on no valid request."""
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        return error_reply(None, C.E_BAD_REQUEST, "request is not valid JSON")
    where = non_finite_path(req)
    req_id = req.get("id") if isinstance(req, dict) else None
    if where is None:       # e.g. a lone surrogate: json accepts what orjson does not
        return error_reply(None, C.E_BAD_REQUEST, "request is not valid JSON")
    if isinstance(req_id, (dict, list)) or non_finite_path(req_id) is not None:
        req_id = None
    return error_reply(req_id, C.E_INVALID_ARGUMENT,
                       f"{where.lstrip('.')}: NaN and Infinity are not JSON numbers")


_NEVER = 1 << 62        # the seq of a held place not yet filled: nothing is that durable


class Deferred:
    """Marker an op returns when it will answer later via `Connection.send_late`."""


DEFERRED = Deferred()


class Connection(asyncio.Protocol):
    """One client. Owned by the loop thread."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ops = server.ops      # the op table: name → op
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.queue: deque[list[Any]] = deque()   # [seq, bytes] in request order
        self.late: list[tuple[int, bytes]] = []   # deferred replies awaiting durability
        self.wbuf: list[bytes] = []
        # Bytes queued, late and in wbuf, plus `in_transport`: what the client
        # has not read. One running count keeps the check per request cheap.
        self.unsent = 0
        self.in_transport = 0               # the transport's buffer when last looked at
        self.max_unsent: int = server.max_unsent
        self.held = False                   # requests wait until `unsent` drains
        self.closing = False
        self.close_when_answered = False    # after request_too_large
        self.cleanup: list[Callable[[], None]] = []

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        # Credentials first: a refused peer must not hold one of the
        # `max_connections` slots, or it could lock out allowed users.
        if not self.server.peer_allowed(transport.get_extra_info("socket")):
            self._refuse(error_reply(None, C.E_PERMISSION_DENIED, "this user may not use jobd"))
            return
        self.server.connections.add(self)
        if len(self.server.connections) > self.server.cfg.max_connections:
            self._refuse(error_reply(None, C.E_UNAVAILABLE, "too many connections"))
            return
        # A held connection whose bytes have all been written needs the
        # transport to say when they are read: holding more than half the
        # bound it has called `pause_writing`, so it calls `resume_writing`
        # once drained; holding less, the connection is already resumable.
        transport.set_write_buffer_limits(high=self.max_unsent // 2, low=self.max_unsent // 4)

    def peer_uid(self) -> int | None:
        """The connected process's user id (SO_PEERCRED), None if unknown."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return None
        try:
            _pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except OSError:
            return None
        return int(uid)

    def _refuse(self, line: bytes) -> None:
        """One error line, then close; nothing the peer sent is read."""
        assert self.transport is not None
        self.closing = True
        self.transport.write(line)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.server.dirty.discard(self)
        for fn in self.cleanup:
            fn()
        self.cleanup.clear()
        self.transport = None       # no protocol <-> transport cycle left for the GC

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._handle_lines()
        self.server.kick()

    def pause_writing(self) -> None:
        """Nothing to do: `unsent` already counts what the transport holds."""

    def resume_writing(self) -> None:
        self._look_at_transport()
        if self.held:
            self._maybe_resume()

    # --- requests ------------------------------------------------------------------------
    def _handle_lines(self) -> None:
        """Handle the complete lines in `buf` in order, until none is left or
        the client has too much unread (then the rest waits in `buf`)."""
        buf = self.buf
        start = 0
        limit = self.server.max_request
        max_unsent = self.max_unsent
        while not self.closing:
            end = buf.find(NL, start)
            if end == -1:
                break
            if end - start > limit:
                self._too_large()
                return
            if self.unsent > max_unsent:
                self._hold()
                break
            if end > start:
                self._handle(bytes(buf[start:end]))
            start = end + 1
        if start:
            del buf[:start]
        # A held `buf` may hold many complete lines: only an unterminated tail is too large.
        if len(buf) > limit and not self.closing and not self.held:
            self._too_large()

    def _hold(self) -> None:
        """Stop reading: what this client has not read is over the bound.
        Whatever moves its bytes on (a flush, the WAL becoming durable, the
        transport draining) checks `_maybe_resume`."""
        self.held = True
        if self.transport is not None:
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        # Resume below half the bound, so a held client is not woken per reply.
        # Not from inside a flush (the daemon's turn): in a callback of its own.
        if self.unsent <= self.max_unsent // 2 and not self.closing:
            asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        if not self.held or self.closing or self.unsent > self.max_unsent // 2:
            return
        self.held = False
        self._handle_lines()
        if not self.held and not self.closing and self.transport is not None:
            self.transport.resume_reading()
        self.server.kick()

    def _too_large(self) -> None:
        """An oversize line cannot be skipped safely: answer and close, after
        the replies to earlier requests (some may still wait for an fsync)."""
        limit = self.server.max_request
        self.buf.clear()
        self.closing = True                  # parse nothing more from this client
        if self.transport is not None:
            self.transport.pause_reading()
        self.close_when_answered = True
        line = error_reply(None, C.E_REQUEST_TOO_LARGE, f"request exceeds max_request_bytes ({limit})")
        self.unsent += len(line)
        self.queue.append([0, line])
        self.server.waiting.add(self)
        if self.release(self.server.journal_durable()):
            self.server.waiting.discard(self)

    def _handle(self, line: bytes) -> None:
        """Decode one request, run its op, queue the reply. Hot path: one function."""
        try:
            req = _loads(line)
        except orjson.JSONDecodeError:
            self._reply(0, _undecodable(line))
            return
        if type(req) is not dict:
            self._reply(0, error_reply(None, C.E_BAD_REQUEST, "request must be a JSON object"))
            return
        req_id = req.get("id")
        op = req.get("op")
        fn = self.ops.get(op) if type(op) is str else None
        if fn is None or isinstance(req_id, (dict, list)):
            self._reply(0, self._refusal(req_id, op))
            return
        try:
            reply, seq = fn(self, req_id, req)
            if reply is DEFERRED:
                return
            reply["id"] = req_id
            reply["ok"] = True
            data = _dumps(reply) + NL
        except OpError as e:
            self._reply(0, error_reply(req_id, e.code, e.message))
            return
        except Exception:
            log.exception("op %s failed", op)
            self._reply(0, error_reply(req_id, C.E_INTERNAL, f"internal error in op {op}"))
            return
        self._reply(seq, data)

    def _refusal(self, req_id: Any, op: Any) -> bytes:
        """The error reply for a request that names no runnable op."""
        if isinstance(req_id, (dict, list)):
            return error_reply(None, C.E_BAD_REQUEST, "id must be a JSON scalar")
        if not isinstance(op, str):
            return error_reply(req_id, C.E_BAD_REQUEST, "request has no op")
        return error_reply(req_id, C.E_UNKNOWN_OP, f"unknown op {op!r}")

    # --- replies ---------------------------------------------------------------------------
    def _reply(self, seq: int, data: bytes) -> None:
        """Queue a reply that may go out once journal seq `seq` is durable."""
        self.unsent += len(data)
        if not self.queue and seq <= self.server.journal_durable():
            self._out(data)
        else:
            self.queue.append([seq, data])
            self.server.waiting.add(self)

    def _out(self, data: bytes) -> None:
        self.wbuf.append(data)
        self.server.dirty.add(self)

    def send_late(self, data: bytes, seq: int = 0) -> None:
        """A deferred reply or an event line: does not wait behind the queue,
        only (with `seq`) for that journal record to be durable."""
        if self.closing:
            return
        self.unsent += len(data)
        if seq <= self.server.journal_durable():
            self._out(data)
        else:
            self.late.append((seq, data))
            self.server.waiting.add(self)
        self.server.kick()

    def hold_place(self) -> list[Any]:
        """A place in the reply order for an op that answers later (a bulk
        op): replies to the requests after it wait behind it, as ops are
        answered in request order. Fill it with `fill_place`."""
        entry: list[Any] = [_NEVER, b""]
        self.queue.append(entry)
        self.server.waiting.add(self)
        return entry

    def fill_place(self, entry: list[Any], data: bytes, seq: int) -> None:
        """The reply for a place held by `hold_place`, sent once `seq` is durable."""
        entry[1] = data
        entry[0] = seq
        if self.closing:
            return
        self.unsent += len(data)
        if self.release(self.server.journal_durable()):
            self.server.waiting.discard(self)
        self.server.kick()

    def send_event(self, data: bytes) -> None:
        """An event line: after every reply already queued here, so a watcher
        never sees an event before the ack of its `watch`."""
        if self.closing:
            return
        self.unsent += len(data)
        if self.queue:
            self.queue.append([0, data])
            self.server.waiting.add(self)
        else:
            self._out(data)
        self.server.kick()

    def release(self, durable: int) -> bool:
        """Move replies whose records are durable to the output; True when empty."""
        q = self.queue
        if q and q[0][0] <= durable:
            out, pop = self.wbuf.append, q.popleft
            while q and q[0][0] <= durable:
                out(pop()[1])
            self.server.dirty.add(self)
        if self.late:
            keep = []
            for seq, data in self.late:
                if seq <= durable:
                    self._out(data)
                else:
                    keep.append((seq, data))
            self.late = keep
        if self.close_when_answered and not q:
            self.flush()
            if self.transport is not None:
                self.transport.close()
        return not q and not self.late

    def fail_range(self, first: int, last: int, why: str) -> None:
        """Replace the replies of records the journal failed to write."""
        for item in self.queue:
            if first <= item[0] <= last:
                req_id = _loads(item[1]).get("id")
                line = error_reply(req_id, C.E_STORAGE_ERROR, why + "; nothing was acknowledged")
                self.unsent += len(line) - len(item[1])
                item[0] = 0
                item[1] = line

    def flush(self) -> None:
        wbuf = self.wbuf
        if not wbuf:
            return
        data = b"".join(wbuf)
        wbuf.clear()
        self.unsent -= len(data)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self._look_at_transport()
        if self.held:
            self._maybe_resume()

    def _look_at_transport(self) -> None:
        """Count the transport's buffer as it is now (it only shrinks between writes)."""
        size = self.transport.get_write_buffer_size() if self.transport is not None else 0
        self.unsent += size - self.in_transport
        self.in_transport = size

    def unread_in_transport(self) -> int:
        """Bytes written to the socket that the client has not read yet."""
        self._look_at_transport()
        return self.in_transport

    def close(self, abort_after: float | None = None) -> None:
        """Close after the output drains; with `abort_after`, drop it if the
        peer has not read it by then (a stuck client must not pin memory)."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()
            if abort_after is not None:
                asyncio.get_running_loop().call_later(abort_after, self.transport.abort)


class Server:
    """Listens, tracks connections, and moves replies when the WAL is durable."""

    def __init__(self, cfg: ServerConfig, ops: dict[str, Op], journal_durable: Callable[[], int],
                 kick: Callable[[], None], connections: set[Connection] | None = None) -> None:
        self.cfg = cfg
        self.ops = ops
        self.journal_durable = journal_durable     # the last WAL seq known durable
        self.kick = kick
        self.max_request = cfg.max_request_bytes
        self.max_unsent = cfg.max_unsent_bytes
        # Shared with whoever counts them (metrics): the set of open connections.
        self.connections: set[Connection] = set() if connections is None else connections
        self.dirty: set[Connection] = set()
        self.waiting: set[Connection] = set()
        self.server: asyncio.AbstractServer | None = None
        self.owns_socket_file = True

    async def start(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.server = await loop.create_unix_server(lambda: Connection(self), sock=sock,
                                                    backlog=1024)

    def peer_allowed(self, sock: socket.socket | None) -> bool:
        uids, gids = self.cfg.allowed_uids, self.cfg.allowed_gids
        if sock is None or not (uids or gids):
            return True
        try:
            _pid, uid, gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except OSError:
            return False
        return uid in (0, os.getuid()) or uid in uids or gid in gids

    def on_durable(self, durable: int) -> None:
        done = [c for c in self.waiting if c.release(durable)]
        for conn in done:
            self.waiting.discard(conn)
        self.kick()

    def on_failed(self, first: int, last: int, why: str) -> None:
        """Records first..last were not written: their replies become
        `storage_error` and go out now (nothing of theirs will become durable)."""
        for conn in self.waiting:
            conn.fail_range(first, last, why)
        self.on_durable(self.journal_durable())

    def flush(self) -> None:
        dirty = self.dirty
        while dirty:
            dirty.pop().flush()

    def stop_listening(self) -> None:
        if self.server is not None:
            self.server.close()

    def close_all(self) -> None:
        self.flush()
        for conn in list(self.connections):
            conn.close()
