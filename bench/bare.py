"""A bare server: the building blocks of jobd with no job logic, to measure ceilings.

`python -m bench.bare --socket PATH --file PATH --fsync always|never [--workers N]`

- A uvloop JSON-lines server on a Unix socket. Each `submit` line is decoded, appended to a
  file (one `write` per read batch) and answered with a job id; with `--fsync always` the
  file is `fdatasync`ed once per read batch before the replies are written (group commit).
- With `--workers N` it is also a relay: each submitted job goes to one of N forked worker
  processes over a socketpair (round robin); the worker decodes it, does nothing, answers;
  the server appends a completion record and answers a pending `result` request for that
  job id. As in jobd (docs/durability.md), the submit's ack waits for its fsync, the job
  goes to its worker before that fsync, and a completion is written but not fsynced before
  its result is answered (the submit is durable by then).

This is what issue 5 calls the ceilings ("bare building blocks, no job logic"), rebuilt
so they can be measured on the machine at hand next to jobd (bench/ceiling.py). It is a
measuring tool, not a queue: no recovery, no validation, no priorities.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any

import orjson

NL = b"\n"


class Store:
    """The append-only file and its group commit."""

    def __init__(self, path: str, fsync: bool) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        self.fsync = fsync
        self.buf = bytearray()

    def append(self, record: bytes) -> None:
        self.buf += record
        self.buf += NL

    def commit(self, sync: bool = True) -> None:
        if self.buf:
            os.write(self.fd, self.buf)
            self.buf.clear()
            if self.fsync and sync:
                os.fdatasync(self.fd)


class Relay:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.workers: list[WorkerSide] = []
        self.next = 0
        self.count = 0
        self.done: dict[str, bytes] = {}
        self.waiting: dict[str, tuple[Client, Any]] = {}

    def new_id(self) -> str:
        self.count += 1
        return f"bare{self.count:028x}"

    def dispatch(self, job_id: str) -> None:
        if self.workers:
            w = self.workers[self.next % len(self.workers)]
            self.next += 1
            w.transport.write(orjson.dumps({"job_id": job_id}) + NL)

    def completed(self, job_id: str) -> None:
        reply = orjson.dumps({"job_id": job_id, "status": "completed", "result": None})
        self.done[job_id] = reply
        waiter = self.waiting.pop(job_id, None)
        if waiter is not None:
            client, req_id = waiter
            client.transport.write(_with_id(reply, req_id))


def _with_id(reply: bytes, req_id: Any) -> bytes:
    return reply[:-1] + b',"ok":true,"id":' + orjson.dumps(req_id) + b"}\n"


class LineProtocol(asyncio.Protocol):
    """JSON lines in: `lines_received` gets every complete line of a read."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.buf = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.rfind(NL)
        if end >= 0:
            lines = bytes(self.buf[:end]).split(NL)
            del self.buf[:end + 1]
            self.lines_received(lines)

    def lines_received(self, lines: list[bytes]) -> None:
        raise NotImplementedError


class Client(LineProtocol):
    def lines_received(self, lines: list[bytes]) -> None:
        relay, store = self.relay, self.relay.store
        out = []
        for line in lines:
            req = orjson.loads(line)
            req_id = req.get("id")
            if req["op"] == "submit":
                job_id = req.get("job_id") or relay.new_id()
                store.append(line)
                relay.dispatch(job_id)
                out.append(orjson.dumps({"id": req_id, "ok": True, "job_id": job_id,
                                         "status": "pending"}) + NL)
            elif req["op"] == "result":
                job_id = req["job_id"]
                if job_id in relay.done:
                    out.append(_with_id(relay.done[job_id], req_id))
                else:
                    relay.waiting[job_id] = (self, req_id)
            else:
                out.append(orjson.dumps({"id": req_id, "ok": True}) + NL)
        store.commit()
        self.transport.write(b"".join(out))


class WorkerSide(LineProtocol):
    """The server's end of one worker's socketpair."""

    def lines_received(self, lines: list[bytes]) -> None:
        ids = [orjson.loads(line)["job_id"] for line in lines]
        for job_id in ids:
            self.relay.store.append(b'["C","' + job_id.encode() + b'"]')
        self.relay.store.commit(sync=False)     # as jobd: written, fsynced lazily
        for job_id in ids:
            self.relay.completed(job_id)


def worker_main(sock: socket.socket) -> None:
    """A forked worker: read a job line, run nothing, answer. Blocking, no event loop."""
    buf = bytearray()
    scratch = bytearray(65536)
    while True:
        n = sock.recv_into(scratch)
        if not n:
            os._exit(0)
        buf += scratch[:n]
        end = buf.rfind(NL)
        if end < 0:
            continue
        lines = bytes(buf[:end]).split(NL)
        del buf[:end + 1]
        out = [orjson.dumps({"job_id": orjson.loads(line)["job_id"], "ok": True}) + NL
               for line in lines]
        sock.sendall(b"".join(out))


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(Store(args.file, args.fsync == "always"))
    for _ in range(args.workers):
        parent, child = socket.socketpair()
        if os.fork() == 0:
            parent.close()
            worker_main(child)
        child.close()
        _, side = await loop.create_unix_connection(lambda: WorkerSide(relay), sock=parent)
        relay.workers.append(side)
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    server = await loop.create_unix_server(lambda: Client(relay), args.socket)
    print("ready", flush=True)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--fsync", choices=("always", "never"), default="always")
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    import uvloop
    try:
        uvloop.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
