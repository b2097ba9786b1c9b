"""The wire protocol through the real daemon (docs/protocol.md): every error code it
serves, request id echo, pipelining, and garbage that must never crash it.

Tests talk over raw sockets so they see exactly what the daemon sends.
"""
from __future__ import annotations

import json
import random
import socket
from typing import Any

import orjson
import pytest
from conftest import T, pid_alive

HANDLER = T + "echo"         # takes any args: the tests pass payloads


class Raw:
    """A raw JSON-lines connection to the daemon."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            try:
                data = orjson.dumps(data) + b"\n"
            except orjson.JSONEncodeError:     # deeper than orjson writes
                data = json.dumps(data).encode() + b"\n"
        self.sock.sendall(data)

    def line(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(f"connection closed; unread {self.buf[:200]!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return orjson.loads(line)

    def ask(self, data: bytes | dict[str, Any]) -> dict[str, Any]:
        self.send(data)
        return self.line()

    def closed(self) -> bool:
        """True when the daemon has closed its end (EOF after any pending data)."""
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return True
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(daemon):
    conns: list[Raw] = []

    def make() -> Raw:
        c = Raw(daemon.socket)
        conns.append(c)
        return c
    yield make
    for c in conns:
        c.close()


def error_code(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return reply["error"]["code"]


def still_usable(conn: Raw) -> None:
    reply = conn.ask({"op": "hello", "id": "after"})
    assert reply["ok"] is True and reply["id"] == "after", reply


# --- error codes ------------------------------------------------------------------------

@pytest.mark.parametrize("line, code", [
    (b"this is not json", "bad_request"),
    (b"{\"op\": \"hello\"", "bad_request"),
    (b"[1, 2, 3]", "bad_request"),
    (b"\"hello\"", "bad_request"),
    (b"42", "bad_request"),
    (b"null", "bad_request"),
    (b"{\"id\": 5}", "bad_request"),
    (b"{\"op\": 7, \"id\": 5}", "bad_request"),
    (b"{\"op\": \"no_such_op\", \"id\": 5}", "unknown_op"),
    (b"\xff\xfe\x00garbage", "bad_request"),
])
def test_bad_lines_get_an_error_and_connection_survives(raw, line, code):
    conn = raw()
    reply = conn.ask(line + b"\n")
    assert error_code(reply) == code
    if b"\"id\": 5" in line:
        assert reply["id"] == 5
    still_usable(conn)


@pytest.mark.parametrize("line, field", [
    (b'{"op":"submit","id":7,"handler":"jobd_testhandlers.echo","args":[1,NaN]}', "args[1]"),
    (b'{"op":"submit","id":7,"handler":"jobd_testhandlers.echo","kwargs":{"x":1e999}}', "kwargs.x"),
    (b'{"op":"submit","id":7,"handler":"jobd_testhandlers.echo","tags":{"t":-Infinity}}', "tags.t"),
])
def test_nan_and_infinity_in_a_request_are_invalid_arguments_naming_where(raw, line, field):
    conn = raw()
    reply = conn.ask(line + b"\n")
    assert error_code(reply) == "invalid_argument" and reply["id"] == 7, reply
    assert reply["error"]["message"].startswith(field + ":"), reply
    assert conn.ask({"op": "metrics", "id": 8})["metrics"]["queue"]["pending"] == 0
    still_usable(conn)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


BAD_SUBMITS = [
    ({"priority": 1001}, "priority"),
    ({"priority": -1}, "priority"),
    ({"priority": "urgent"}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"priority": True}, "priority"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": "3"}, "max_retries"),
    ({"delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "delay"),
    ({"delay": -1}, "delay"),
    ({"run_at": "not a time"}, "run_at"),
    ({"run_at": 12}, "run_at"),
    ({"job_id": ""}, "job_id"),
    ({"job_id": "has space"}, "job_id"),
    ({"job_id": 12}, "job_id"),
    ({"job_id": "x" * 200}, "job_id"),
    ({"args": {"a": 1}}, "args"),
    ({"args": "abc"}, "args"),
    ({"kwargs": [1, 2]}, "kwargs"),
    ({"kwargs": "abc"}, "kwargs"),
    ({"tags": ["a"]}, "tags"),
    ({"tags": {"k": [1]}}, "tags"),
    ({"depends_on": "abc"}, "depends_on"),
    ({"depends_on": [1]}, "depends_on"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": "10"}, "timeout"),
    ({"retry_delay": -1}, "retry_delay"),
    ({"retry_backoff": 0.5}, "retry_backoff"),
    ({"name": 5}, "name"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"handler": 5}, "handler"),
    ({"handler": ""}, "handler"),
    ({"handler": None}, "handler"),
    ({"args": nested(300)}, "args"),           # parses, but could never be written back
    ({"kwargs": {"a": nested(300)}}, "kwargs"),
]


def test_invalid_submit_fields_name_the_field(make_daemon):
    d = make_daemon(workers=0)
    conn = Raw(d.socket)
    problems = []
    try:
        for fields, field in BAD_SUBMITS:
            req = {"op": "submit", "id": "s", "handler": HANDLER, **fields}
            reply = conn.ask(req)
            if (reply.get("ok") is not False or reply["id"] != "s"
                    or reply["error"]["code"] != "invalid_argument"
                    or field not in reply["error"]["message"]):
                problems.append((fields if len(str(fields)) < 200 else field, reply))
            still_usable(conn)
            # the same fields inside a submit_many are rejected too, naming the job
            batch = {"op": "submit_many", "id": "m",
                     "jobs": [{"handler": HANDLER}, {"handler": HANDLER, **fields}]}
            reply = conn.ask(batch)
            if (reply.get("ok") is not False or reply["error"]["code"] != "invalid_argument"
                    or field not in reply["error"]["message"]
                    or "jobs[1]" not in reply["error"]["message"]):
                problems.append(("submit_many", field, reply))
        assert conn.ask({"op": "list", "id": 1})["total"] == 0, "a rejected submit queued a job"
    finally:
        conn.close()
    assert not problems, problems


def test_other_error_codes_keep_the_connection_usable(raw):
    conn = raw()
    # unknown_handler: nothing queued
    r = conn.ask({"op": "submit", "id": 1, "handler": "os.system", "args": ["true"]})
    assert error_code(r) == "unknown_handler" and r["id"] == 1
    still_usable(conn)
    assert conn.ask({"op": "list", "id": 2})["total"] == 0
    # not_found for every op that takes a job id
    for op in ("status", "progress", "result", "cancel", "retry"):
        r = conn.ask({"op": op, "id": op, "job_id": "nope"})
        assert error_code(r) == "not_found", (op, r)
        assert r["id"] == op
    r = conn.ask({"op": "submit", "id": 3, "handler": HANDLER, "depends_on": ["ghost"]})
    assert error_code(r) == "not_found" and "ghost" in r["error"]["message"]
    still_usable(conn)
    # invalid_argument on other ops names the field
    for req, field in [({"op": "status"}, "job_id"),
                       ({"op": "list", "limit": -1}, "limit"),
                       ({"op": "list", "status": "bogus"}, "status"),
                       ({"op": "list", "tag": "novalue"}, "tag"),
                       ({"op": "purge", "status": "pending"}, "status"),
                       ({"op": "metrics", "format": "xml"}, "format"),
                       ({"op": "submit_many", "jobs": []}, "jobs"),
                       ({"op": "submit_many", "jobs": "x"}, "jobs"),
                       ({"op": "cancel", "job_id": "a", "force": "yes"}, None)]:
        r = conn.ask({"id": "v", **req})
        assert r["id"] == "v"
        code = error_code(r)
        if field is None:   # `force` on an unknown job: either complaint is fine
            assert code in ("invalid_argument", "not_found"), r
        else:
            assert code == "invalid_argument", (req, r)
            assert field in r["error"]["message"], (req, r)
    still_usable(conn)


def test_conflict_when_retrying_a_pending_job(make_daemon):
    d = make_daemon(workers=0)
    conn = Raw(d.socket)
    try:
        r = conn.ask({"op": "submit", "id": 1, "handler": HANDLER, "job_id": "p1"})
        assert r["ok"] and r["status"] == "pending"
        r = conn.ask({"op": "retry", "id": 2, "job_id": "p1"})
        assert error_code(r) == "conflict" and r["id"] == 2
        still_usable(conn)
        assert conn.ask({"op": "status", "id": 3, "job_id": "p1"})["job"]["status"] == "pending"
    finally:
        conn.close()


def test_queue_full(make_daemon):
    d = make_daemon(workers=0, config="[queue]\nmax_size = 5\n")
    conn = Raw(d.socket)
    try:
        for i in range(5):
            assert conn.ask({"op": "submit", "id": i, "handler": HANDLER})["ok"]
        r = conn.ask({"op": "submit", "id": "over", "handler": HANDLER})
        assert error_code(r) == "queue_full" and r["id"] == "over"
        r = conn.ask({"op": "submit_many", "id": "batch",
                      "jobs": [{"handler": HANDLER}]})
        assert error_code(r) == "queue_full"
        still_usable(conn)
        assert conn.ask({"op": "list", "id": 1})["total"] == 5
        # a resubmit of an existing job id is not a new job: still answered
        r = conn.ask({"op": "submit", "id": 9, "handler": HANDLER, "job_id": "known"})
        assert error_code(r) == "queue_full"
        known = conn.ask({"op": "list", "id": 1, "limit": 1, "offset": 4})["jobs"][0]["id"]
        r = conn.ask({"op": "submit", "id": 10, "handler": HANDLER, "job_id": known})
        assert r["ok"] is True and r["job_id"] == known, r
        # making room lets submits in again
        first = conn.ask({"op": "list", "id": 1, "limit": 1})["jobs"][0]["id"]
        assert conn.ask({"op": "cancel", "id": 2, "job_id": first})["cancelled"] is True
        assert conn.ask({"op": "submit", "id": 3, "handler": HANDLER})["ok"]
        assert error_code(conn.ask({"op": "submit", "id": 4, "handler": HANDLER})) == "queue_full"
    finally:
        conn.close()


def test_request_too_large_closes_the_connection(make_daemon):
    d = make_daemon(workers=0, config="[server]\nmax_request_bytes = 2048\n")
    conn = Raw(d.socket)
    other = Raw(d.socket)
    try:
        # a line just under the limit is served
        small = {"op": "submit", "id": 1, "handler": HANDLER, "args": ["x" * 1500]}
        assert conn.ask(small)["ok"]
        big = orjson.dumps({"op": "submit", "id": 2, "handler": HANDLER,
                            "args": ["x" * 5000]}) + b"\n"
        r = conn.ask(big)
        assert error_code(r) == "request_too_large"
        assert conn.closed()
        # an oversized line without a newline yet is refused too
        third = Raw(d.socket)
        third.send(b"{" + b" " * 4096)
        assert error_code(third.line()) == "request_too_large"
        assert third.closed()
        third.close()
        # the daemon and other connections are unaffected; nothing big was queued
        still_usable(other)
        assert other.ask({"op": "list", "id": 1})["total"] == 1
    finally:
        conn.close()
        other.close()


def test_request_too_large_still_answers_the_requests_before_it(make_daemon):
    """Earlier requests in the same write wait for their fsync; the oversize
    line must not make the daemon drop those replies (or its own error)."""
    d = make_daemon(workers=0, config="[server]\nmax_request_bytes = 2048\n")
    conn = Raw(d.socket)
    try:
        lines = b"".join(orjson.dumps({"op": "submit", "id": i, "handler": HANDLER}) + b"\n"
                         for i in range(20))
        conn.send(lines + b"{" + b" " * 4096 + b"\n")
        replies = [conn.line() for _ in range(21)]
        assert [r["id"] for r in replies[:20]] == list(range(20))
        assert all(r["ok"] for r in replies[:20])
        assert error_code(replies[20]) == "request_too_large"
        assert conn.closed()
    finally:
        conn.close()
    other = Raw(d.socket)
    assert other.ask({"op": "list", "id": 1})["total"] == 20
    other.close()


def test_watch_ack_comes_before_its_events(make_daemon):
    """A watch pipelined behind a submit that waits for its fsync: the job
    events published meanwhile must not overtake the watch's own ack."""
    d = make_daemon(workers=0)
    conn = Raw(d.socket)
    try:
        conn.send(orjson.dumps({"op": "submit", "id": 1, "handler": HANDLER}) + b"\n"
                  + orjson.dumps({"op": "watch", "id": 2}) + b"\n"
                  + orjson.dumps({"op": "submit", "id": 3, "handler": HANDLER}) + b"\n")
        first = [conn.line() for _ in range(2)]
        assert [r.get("id") for r in first] == [1, 2] and "event" not in first[1], first
        rest = [conn.line() for _ in range(2)]
        assert {r.get("id") for r in rest} == {2, 3}
        assert any(r.get("event") == "job.submitted" for r in rest), rest
    finally:
        conn.close()


def test_job_id_with_a_trailing_newline_is_invalid(raw):
    conn = raw()
    reply = conn.ask({"op": "submit", "id": 1, "handler": HANDLER, "job_id": "abc\n"})
    assert error_code(reply) == "invalid_argument" and "job_id" in reply["error"]["message"]
    assert conn.ask({"op": "list", "id": 2})["total"] == 0


# --- ids, pipelining ---------------------------------------------------------------------

@pytest.mark.parametrize("rid", [0, 1, -7, 2**53, 3.25, -0.5, "abc", "", "ünï", True, False, None])
def test_request_id_is_echoed(raw, rid):
    conn = raw()
    reply = conn.ask({"op": "hello", "id": rid})
    assert reply["ok"] is True
    assert reply["id"] == rid and type(reply["id"]) is type(rid)
    err = conn.ask({"op": "status", "id": rid, "job_id": "missing"})
    assert err["id"] == rid and type(err["id"]) is type(rid)
    assert error_code(err) == "not_found"


def test_request_without_id_gets_null_id(raw):
    reply = raw().ask(b'{"op":"hello"}\n')
    assert reply["ok"] is True and reply["id"] is None


@pytest.mark.parametrize("rid", [[1], {"a": 1}])
def test_non_scalar_id_is_a_bad_request(raw, rid):
    conn = raw()
    assert error_code(conn.ask({"op": "hello", "id": rid})) == "bad_request"
    still_usable(conn)


def test_500_pipelined_requests_in_one_write(make_daemon):
    d = make_daemon(workers=0)
    conn = Raw(d.socket, timeout=30)
    try:
        rng = random.Random(500)
        lines = []
        expect = []
        for i in range(500):
            kind = rng.choice(["submit", "hello", "status", "bad", "unknown"])
            if kind == "submit":
                lines.append({"op": "submit", "id": i, "handler": HANDLER, "job_id": f"j{i}"})
            elif kind == "hello":
                lines.append({"op": "hello", "id": i})
            elif kind == "status":
                lines.append({"op": "status", "id": i, "job_id": "nope"})
            elif kind == "bad":
                lines.append({"op": "submit", "id": i, "handler": HANDLER, "priority": 5000})
            else:
                lines.append({"op": "frob", "id": i})
            expect.append(kind)
        conn.send(b"".join(orjson.dumps(x) + b"\n" for x in lines))
        for i, kind in enumerate(expect):
            r = conn.line()
            assert r["id"] == i, f"reply {i} out of order: {r}"
            if kind in ("submit", "hello"):
                assert r["ok"] is True, r
                if kind == "submit":
                    assert r["job_id"] == f"j{i}"
            else:
                assert error_code(r) == {"status": "not_found", "bad": "invalid_argument",
                                         "unknown": "unknown_op"}[kind]
        submitted = expect.count("submit")
        assert conn.ask({"op": "list", "id": "n", "limit": 0})["total"] == submitted
    finally:
        conn.close()


def test_requests_split_across_writes_and_blank_lines(raw):
    conn = raw()
    data = b'\n\n{"op":"hel'
    conn.send(data)
    conn.send(b'lo","id":1}\n{"op":"hello",')
    conn.send(b'"id":2}\n')
    assert conn.line()["id"] == 1
    assert conn.line()["id"] == 2


# --- garbage ----------------------------------------------------------------------------

OPS = ["hello", "submit", "submit_many", "status", "progress", "result", "wait", "cancel",
       "list", "dead_letters", "retry", "purge", "metrics", "workers", "scale",
       "restart_worker", "watch", "schedule_add", "schedule_list", "schedule_remove"]
FIELDS = ["handler", "args", "kwargs", "priority", "max_retries", "retry_delay",
          "retry_backoff", "timeout", "tags", "name", "depends_on", "delay", "run_at",
          "job_id", "jobs", "status", "limit", "offset", "older_than", "format", "force",
          "count", "worker_id", "events", "wait", "tag", "cron", "timezone"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(12 if depth < 4 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.randint(-2**63, 2**64 - 1)
    if choice == 3:
        return rng.choice([0, -1, 1, 1000, 1001, 2**31, -2**31])
    if choice == 4:
        return rng.choice([1e308, -1e308, 1e-300, 0.5, -0.0, 3.14])
    if choice == 5:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(20)))
    if choice == 6:
        return rng.choice(["", "low", "critical", "pending", "completed", "x=y",
                           HANDLER, "2030-01-01T00:00:00Z", "0 * * * *", "nope"])
    if choice == 7:
        return "a" * rng.randrange(1, 3000)
    if choice in (8, 9):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(FIELDS + ["x", ""]): random_value(rng, depth + 1)
            for _ in range(rng.randrange(5))}


def garbage_line(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:       # random bytes (no newline inside)
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b"")
    if kind == 1:       # a random JSON value
        return orjson.dumps(random_value(rng))
    if kind == 2:       # truncated JSON of a real request
        full = orjson.dumps({"op": rng.choice(OPS), "id": 1, "handler": HANDLER,
                             "args": [1, 2, 3], "kwargs": {"a": "b"}})
        return full[:rng.randrange(1, len(full))]
    if kind == 3:       # huge numbers, which orjson may refuse or lose precision on
        n = "9" * rng.randrange(20, 400)
        return rng.choice([f'{{"op":"submit","id":{n},"handler":"{HANDLER}"}}',
                           f'{{"op":"list","id":1,"limit":{n}}}',
                           f'{{"op":"submit","id":1,"handler":"{HANDLER}","priority":{n}}}',
                           f'{{"op":"submit","id":1,"handler":"{HANDLER}","delay":1e{n}}}',
                           f'{{"op":"purge","id":1,"status":"failed","older_than":-1e{n}}}',
                           '{"op":"list","id":NaN}', '{"op":"list","id":Infinity}']).encode()
    if kind == 4:       # deeply nested arrays
        depth = rng.randrange(1, 2000)
        return b'{"op":"submit","id":1,"handler":"' + HANDLER.encode() + b'","args":' \
            + b"[" * depth + b"]" * depth + b"}"
    if kind == 5:       # deep nesting, unbalanced
        return b"[" * rng.randrange(1, 5000)
    # wrong-typed fields to real ops; never `scale`/`restart_worker` with
    # values that would take the test's time (they are fast anyway with 0 workers)
    req: dict[str, Any] = {"op": rng.choice(OPS), "id": rng.randrange(1000)}
    for _ in range(rng.randrange(1, 6)):
        req[rng.choice(FIELDS)] = random_value(rng)
    if req["op"] == "scale":
        req["count"] = rng.choice([None, -1, "3", 1.5, 2000, [], 0])
    if req["op"] in ("result", "wait") and isinstance(req.get("wait"), (int, float)):
        req["wait"] = 0
    try:
        return orjson.dumps(req)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(req).encode()


def test_garbage_never_crashes_the_daemon(make_daemon):
    d = make_daemon(workers=0)
    rng = random.Random(20260101)
    conn = Raw(d.socket, timeout=20)
    try:
        # a known job, so ops with a matching job_id reach deeper code
        assert conn.ask({"op": "submit", "id": 0, "handler": HANDLER, "job_id": "nope"})["ok"]
        sent = 0
        for _ in range(400):
            line = garbage_line(rng)
            assert b"\n" not in line
            conn.send(line + b"\n")
            # every line gets exactly one reply (watch: one ack; events may follow
            # later but with 0 workers the only events are job.* for changes we make)
            reply = conn.line()
            while "event" in reply:
                reply = conn.line()
            assert isinstance(reply, dict) and "ok" in reply, reply
            if reply["ok"] is False:
                assert reply["error"]["code"] != "internal", (line[:300], reply)
            sent += 1
            if rng.random() < 0.05:     # fresh connections now and then
                conn.close()
                conn = Raw(d.socket, timeout=20)
        assert sent == 400
        assert pid_alive(d.pid)
        still_usable(conn)
        fresh = Raw(d.socket)
        still_usable(fresh)
        fresh.close()
    finally:
        conn.close()
    assert "Traceback" not in d.log(), d.log()[-3000:]


WRONG_TYPES = [[1], {"a": 1}, True, 1.5, -1, "x", None, [HANDLER], ["failed", "completed"]]


def test_every_op_and_field_with_wrong_types_is_never_internal(make_daemon):
    """Exhaustive where the fuzz above samples: each op, each argument name,
    each wrong-typed value (alone, on an existing job). None may give
    `internal`, and the connection stays usable."""
    d = make_daemon(workers=0)
    conn = Raw(d.socket, timeout=20)
    try:
        assert conn.ask({"op": "submit", "id": 0, "handler": HANDLER, "job_id": "known"})["ok"]
        for op in OPS:
            for field in FIELDS:
                for value in WRONG_TYPES:
                    req = {"op": op, "id": 1, "job_id": "known", field: value}
                    if op == "scale" and field == "count" and isinstance(value, int) \
                            and not isinstance(value, bool) and value >= 0:
                        continue
                    if op == "watch":           # an accepted watch turns the connection
                        watcher = Raw(d.socket)  # into an event stream: one each
                        reply = watcher.ask(req)
                        watcher.close()
                    else:
                        reply = conn.ask(req)
                    if not reply["ok"]:
                        assert reply["error"]["code"] != "internal", (req, reply)
        still_usable(conn)
    finally:
        conn.close()
    assert pid_alive(d.pid)
    assert "Traceback" not in d.log(), d.log()[-3000:]
