"""asyncio client: one pipelined connection shared by many tasks.

Requests are written as they come; a single reader task resolves the Future
registered under each reply's id, so replies may arrive in any order. What each
method sends and returns comes from `_requests`, exactly as for `Client`.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

from . import _requests as rq
from ._requests import JobFilter, ListFilter, MoreFilters
from ._wire import MAX_LINE_BYTES, decode, encode
from .errors import DaemonUnavailable, no_daemon
from .models import Event, Job, Page
from .paths import client_socket_candidates, likely_socket

T = TypeVar("T")
# Aliases at module level: inside the classes `list` names the method.
Args = list[Any]
Dicts = list[dict[str, Any]]
Strings = list[str]
Statuses = str | list[str] | None
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Lost(Exception):
    """The connection died before the reply came; the caller may resend once.
    `sent`: the request may have reached the daemon."""

    def __init__(self, why: str, sent: bool = True) -> None:
        super().__init__(why)
        self.sent = sent


async def open_first(paths: Sequence[str]) -> tuple[Streams, str]:
    """Streams to the first of `paths` that accepts a connection, and which it was.

    The line limit is big enough for large results. DaemonUnavailable names
    every path tried and why each failed.
    """
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            return await asyncio.open_unix_connection(path, limit=MAX_LINE_BYTES), path
        except OSError as exc:
            failures.append((path, exc.strerror or str(exc)))
    raise no_daemon(failures)


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One full line, or _Lost when the daemon closed or reset the connection."""
    try:
        line = await reader.readline()
    except (OSError, ValueError) as exc:  # ValueError: line above MAX_LINE_BYTES
        raise _Lost(str(exc) or type(exc).__name__) from exc
    if not line.endswith(b"\n"):
        raise _Lost("daemon closed the connection")
    return line


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close, tolerating a peer that already reset the connection."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class _Pending:
    """A request waiting for its reply; `size` lets us blame id-less errors."""

    __slots__ = ("future", "size")

    def __init__(self, future: asyncio.Future[dict[str, Any]], size: int) -> None:
        self.future = future
        self.size = size


class _Connection:
    """One open stream, its reader task, and the requests awaiting replies by id.

    Invariant: once `alive` is False no request is registered, and every
    registered one has been failed, so no caller waits forever.
    """

    def __init__(self, streams: Streams) -> None:
        self.reader, self.writer = streams
        self.alive = True
        self.pending: dict[int, _Pending] = {}
        self.task = asyncio.create_task(self._read_loop())

    async def request(self, request_id: int, data: bytes) -> dict[str, Any]:
        """Send one request and wait for the reply with its id."""
        if not self.alive:
            raise _Lost("connection closed", sent=False)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = _Pending(future, len(data))
        try:
            self.writer.write(data)
            await self.writer.drain()
            return await future
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            # EPIPE on write: the daemon was gone before our bytes could reach it.
            raise _Lost(str(exc), sent=not isinstance(exc, BrokenPipeError)) from exc
        finally:
            self.pending.pop(request_id, None)

    async def _read_loop(self) -> None:
        reason = "daemon closed the connection"
        try:
            while True:
                msg = decode(await read_line(self.reader))
                if msg is not None:
                    self._route(msg)
        except _Lost as exc:
            reason = str(exc)
        finally:
            self._fail_all(_Lost(reason))
            self.writer.close()

    def _route(self, msg: dict[str, Any]) -> None:
        request_id = msg.get("id")
        entry = self.pending.pop(request_id, None) if isinstance(request_id, int) else None
        if entry is None and request_id is None and msg.get("ok") is False:
            entry = self._largest()  # the daemon could not parse it: likely the biggest one
        if entry is not None and not entry.future.done():
            entry.future.set_result(msg)

    def _largest(self) -> _Pending | None:
        if not self.pending:
            return None
        request_id = max(self.pending, key=lambda i: self.pending[i].size)
        return self.pending.pop(request_id)

    def _fail_all(self, exc: Exception) -> None:
        self.alive = False
        for entry in self.pending.values():
            if not entry.future.done():
                entry.future.set_exception(exc)
        self.pending.clear()

    async def close(self, exc: Exception) -> None:
        """Fail waiting callers with `exc`, then close and let the reader task finish."""
        self._fail_all(exc)
        await close_stream(self.writer)
        await self.task


class AsyncClient:
    """Coroutine client; connects on first use and reconnects after the daemon restarts.

    The socket is found as `Client` finds it, and kept once found. A request
    whose connection breaks before its reply is resent once on a new
    connection when that is harmless (submits carry a job_id, so a resend
    never duplicates a job).
    """

    def __init__(self, socket_path: str | None = None) -> None:
        self._candidates = client_socket_candidates(socket_path)
        self._found: str | None = socket_path or None
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)

    @property
    def socket_path(self) -> str:
        """The socket in use: given, or found by the first connection. Before
        that, the first candidate that exists (a guess: it may not answer)."""
        return self._found if self._found is not None else likely_socket(self._candidates)

    # --- connection --------------------------------------------------------

    @classmethod
    async def connect(cls, socket_path: str | None = None) -> AsyncClient:
        """Create and connect, so a missing daemon raises DaemonUnavailable here."""
        client = cls(socket_path)
        await client._connection()
        return client

    async def close(self) -> None:
        """Close the connection; calls still waiting raise DaemonUnavailable."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close(DaemonUnavailable(self.socket_path, "client closed"))

    async def __aenter__(self) -> AsyncClient:
        await self._connection()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _paths(self) -> list[str]:
        """Where to connect: every candidate until one answered, then only that one."""
        return self._candidates if self._found is None else [self._found]

    async def _connection(self) -> _Connection:
        async with self._lock:  # many tasks may find the connection dead at once
            if self._conn is None or not self._conn.alive:
                await self._discard()
                streams, self._found = await open_first(self._paths())
                self._conn = _Connection(streams)
            return self._conn

    async def _discard(self) -> None:
        if self._conn is not None:
            await self._conn.close(_Lost("connection replaced"))
            self._conn = None

    # --- one round trip ------------------------------------------------------------

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send any op (None-valued arguments omitted); return the reply body or raise JobdError."""
        return await self._run(rq.generic(op, args))

    async def _run(self, call: rq.Call[T]) -> T:
        request = rq.message(call.op, next(self._ids), call.args)
        reply = await self._roundtrip(request["id"], encode(request), call.op)
        return call.decode(rq.check(reply))

    async def _roundtrip(self, request_id: int, data: bytes, op: str) -> dict[str, Any]:
        for attempt in range(2):
            conn = await self._connection()
            try:
                return await conn.request(request_id, data)
            except _Lost as exc:
                # The reader task may not have seen the EOF yet (the loop did not
                # run while the daemon went away): never reuse this connection.
                conn._fail_all(exc)
                if exc.sent and op not in rq.RESENDABLE:
                    raise DaemonUnavailable(self.socket_path, rq.lost_after_send(op)) from None
                if attempt:
                    raise DaemonUnavailable(self.socket_path, f"connection lost: {exc}") from None
        raise AssertionError("unreachable")

    async def _run_batch(self, calls: rq.Batch) -> list[Any]:
        """Run `calls` concurrently on the pipelined connection; their decoded
        replies in order. The first error cancels the rest."""
        if len(calls) == 1:
            return [await self._run(calls[0])]
        tasks = [asyncio.ensure_future(self._run(call)) for call in calls]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:      # after an error the others' answers are not wanted
                task.cancel()

    async def _drive(self, steps: rq.Steps[T]) -> T:
        """Run a multi-call generator from `_requests`, feeding it each batch's replies."""
        try:
            batch = next(steps)
            while True:
                batch = steps.send(await self._run_batch(batch))
        except StopIteration as done:
            value: T = done.value
            return value

    # --- ops (docs/protocol.md) ---------------------------------------------------

    async def hello(self) -> dict[str, Any]:
        """Daemon version, protocol number and registered handler names."""
        return await self._run(rq.hello())

    async def submit(self, handler: str, args: Args | None = None,
                     kwargs: dict[str, Any] | None = None, *, priority: int | str | None = None,
                     max_retries: int | None = None, retry_delay: float | None = None,
                     retry_backoff: float | None = None, timeout: float | None = None,
                     tags: dict[str, Any] | None = None, name: str | None = None,
                     depends_on: Strings | None = None, delay: float | None = None,
                     run_at: str | None = None, job_id: str | None = None,
                     queue: str | None = None, unique_key: str | None = None,
                     unique_for: float | None = None, on_conflict: str | None = None) -> str:
        """Queue one job and return its id (generated here when not given, for safe resends).

        With a `unique_key` that a live job holds, no job is made: the id
        returned is the holder's (`on_conflict="return"`, the default), or
        Conflict is raised (`"error"`), or a holder that has not started is
        cancelled for the new job (`"replace"`)."""
        options = dict(priority=priority, max_retries=max_retries, retry_delay=retry_delay,
                       retry_backoff=retry_backoff, timeout=timeout, tags=tags, name=name,
                       depends_on=depends_on, delay=delay, run_at=run_at, job_id=job_id,
                       queue=queue, unique_key=unique_key, unique_for=unique_for,
                       on_conflict=on_conflict)
        return await self._run(rq.submit(handler, args, kwargs, options))

    async def submit_many(self, jobs: Dicts) -> Strings:
        """Queue several jobs all-or-nothing; entries without a job_id get one."""
        return await self._run(rq.submit_many(jobs))

    async def status(self, job_id: str) -> Job:
        """The job view; a completed job's `result` is filled in too."""
        return await self._drive(rq.status_steps(job_id))

    async def progress(self, job_id: str) -> dict[str, Any] | None:
        """The job's last progress report, or None."""
        return await self._run(rq.progress(job_id))

    async def result(self, job_id: str, wait: float | None = None) -> dict[str, Any]:
        """The outcome, waiting up to `wait` s for the job to finish (result None if not)."""
        return await self._run(rq.result(job_id, wait))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job, with its result, once it is terminal (check `job.ok`).
        Raises WaitTimeout, `.job` its last view, if not within `timeout` s."""
        return (await self._drive(rq.wait_steps([job_id], timeout)))[0]

    async def wait_many(self, job_ids: Sequence[str], timeout: float | None = None) -> list[Job]:
        """The jobs, in the order of `job_ids`, once all are terminal. Raises
        WaitTimeout (`.job` the first unfinished, `.jobs` every last view) if
        they are not within `timeout` s. The waits are pipelined, not polled."""
        return await self._drive(rq.wait_steps(job_ids, timeout))

    async def cancel(self, job_id: str, force: bool = False) -> bool:
        """True when the job is now cancelled (a running job needs `force`)."""
        return await self._run(rq.cancel(job_id, force))

    async def list(self, status: Statuses = None, handler: str | None = None,
                   tag: str | None = None, limit: int = 100, offset: int = 0,
                   queue: str | None = None, **where: Unpack[MoreFilters]) -> Page:
        """Jobs in submit order, filtered by any field of the bulk filter
        (`tag` is "key=value"; also `created_before`, `created_after`,
        `error_match`, `ids`, `signature`); `Page.total` counts every match."""
        return await self._run(rq.list_jobs(status, handler, tag, limit, offset, queue, where))

    async def dead_letters(self, limit: int = 100, offset: int = 0,
                           **where: Unpack[ListFilter]) -> Page:
        """Jobs whose retries are exhausted, filtered as `list` (e.g. `signature=`)."""
        return await self._run(rq.dead_letters(limit, offset, where))

    async def failure_groups(self, status: str | None = None, queue: str | None = None,
                             handler: str | None = None, limit: int | None = None) -> Dicts:
        """Dead-letter (default) or `failed` jobs grouped by what went wrong, largest
        first: `signature`, `handler`, `error_type`, `message` (normalised),
        `count`, `first_seen`, `last_seen`, `sample_ids`. Retry or purge a group
        with `retry_many(signature=...)` / `purge(signature=...)`."""
        return await self._run(rq.failure_groups(status, queue, handler, limit))

    async def retry(self, job_id: str) -> str:
        """Run a dead-lettered, failed or cancelled job again; returns its new status."""
        return await self._run(rq.retry(job_id))

    async def purge(self, status: Statuses = None, older_than: float | None = None,
                    **where: Unpack[JobFilter]) -> int:
        """Delete finished jobs (older than `older_than` s, matching the filter
        fields given: `queue`, `handler`, `tag`, ...); returns how many."""
        return await self._run(rq.purge(status, older_than, where))

    async def metrics(self, format: str = "json") -> Any:
        """The metrics object, or the Prometheus text when format="prometheus"."""
        return await self._run(rq.metrics(format))

    async def workers(self) -> Dicts:
        """One dict per worker process."""
        return await self._run(rq.workers())

    async def scale(self, count: int, queue: str | None = None) -> dict[str, Any]:
        """Set the worker count of a queue's pool (default `default`); returns
        `previous` and `target`."""
        return await self._run(rq.scale(count, queue))

    async def restart_worker(self, worker_id: Any) -> bool:
        """Recycle one worker process."""
        return await self._run(rq.restart_worker(worker_id))

    def watch(self, job_id: str | None = None, events: Strings | None = None) -> AsyncWatchStream:
        """Event stream on its own connection; `await` it or `async with` it to be sure
        the daemon is subscribed before you act, or just `async for` over it."""
        return AsyncWatchStream(self._paths(), rq.watch(job_id, events))

    async def schedule_add(self, name: str, cron: str, handler: str,
                           args: Args | None = None, kwargs: dict[str, Any] | None = None,
                           timezone: str = "UTC", **submit_options: Any) -> dict[str, Any]:
        """Add a cron schedule that submits `handler` jobs."""
        call = rq.schedule_add(name, cron, handler, args, kwargs, timezone, submit_options)
        return await self._run(call)

    async def schedule_list(self) -> Dicts:
        """All schedules with their next and last run."""
        return await self._run(rq.schedule_list())

    async def schedule_remove(self, name: str) -> bool:
        """Remove a schedule; False when there was none."""
        return await self._run(rq.schedule_remove(name))

    async def logs(self, job_id: str, offset: int = 0) -> dict[str, Any]:
        """What the job printed and logged, from `offset`: `text`, `offset` (pass
        it back to continue), `truncated`, `complete` (the job is terminal)."""
        return await self._run(rq.logs(job_id, offset))

    async def reload(self) -> dict[str, Any]:
        """Re-import the handler modules: `reloaded`, `handlers_added`,
        `handlers_removed`, `error` (why not, the old code still serving)."""
        return await self._run(rq.reload())

    async def handlers(self) -> Dicts:
        """The registered handlers, as the daemon describes them (queue, state,
        paused, pending, running, held, options)."""
        return await self._run(rq.handlers())

    # --- flow control ---------------------------------------------------------------

    async def queues(self) -> Dicts:
        """One dict per queue: name, workers, paused, rate, max_size, counts, held."""
        return await self._run(rq.queues())

    async def pause(self, queue: str | None = None, handler: str | None = None,
                    for_s: float | None = None, reason: str | None = None) -> dict[str, Any]:
        """Hold the jobs of a queue or of a handler (exactly one), for `for_s`
        seconds or until `resume`. Returns the pause: `queue` or `handler`,
        `since`, `until`, `reason`, `by_uid`. Running jobs finish."""
        return await self._run(rq.pause(queue, handler, for_s, reason))

    async def resume(self, queue: str | None = None, handler: str | None = None) -> bool:
        """Lift a pause; False when it was not paused."""
        return await self._run(rq.resume(queue, handler))

    async def breaker_reset(self, handler: str) -> bool:
        """Close the handler's circuit breaker; False when it was closed."""
        return await self._run(rq.breaker_reset(handler))

    async def quarantine(self, handler: str, reason: str | None = None) -> dict[str, Any]:
        """Hold every job of the handler until `release`: returns `reason`, `since`."""
        return await self._run(rq.quarantine(handler, reason))

    async def release(self, handler: str) -> bool:
        """Lift the handler's quarantine (its breaker closes and forgets its
        trips); False when it was not quarantined."""
        return await self._run(rq.release(handler))

    async def cancel_many(self, *, status: Statuses = None, force: bool = False,
                          dry_run: bool = False, **where: Unpack[JobFilter]) -> dict[str, Any]:
        """Cancel the jobs matching the filter: `matched`, `cancelled`, `sample`
        (up to 5 ids). `dry_run` only counts. Running jobs need `force`."""
        return await self._run(rq.cancel_many(status, where, force, dry_run))

    async def retry_many(self, *, status: Statuses = None, dry_run: bool = False,
                         **where: Unpack[JobFilter]) -> dict[str, Any]:
        """Run the matching dead-lettered, failed and cancelled jobs again:
        `matched`, `retried`, `sample`. `dry_run` only counts."""
        return await self._run(rq.retry_many(status, where, dry_run))

    async def replay(self, job_id: str, args: Args | None = None,
                     kwargs: dict[str, Any] | None = None, priority: int | str | None = None,
                     queue: str | None = None, delay: float | None = None) -> str:
        """A new job from a terminal one (its handler, args, options; those given
        here replace them); returns the new job's id. The original is untouched."""
        return await self._run(rq.replay(job_id, args, kwargs, priority, queue, delay))


    # --- alerts ---------------------------------------------------------------------

    async def alerts(self) -> Dicts:
        """The firing alerts: fingerprint, rule, labels, annotations, since, last_sent."""
        return await self._run(rq.alerts())

    async def alert_test(self) -> dict[str, Any]:
        """Send the test alert (alertname `JobdTest`) to the configured command and
        webhook: `queued` (false when neither is configured), `targets`, `fingerprint`."""
        return await self._run(rq.alert_test())


class AsyncWatchStream:
    """Async iterator of Events on its own connection, opened on first use.

    `aclose()` ends the iteration; a connection the daemon drops raises
    DaemonUnavailable, since silently ending would hide lost events.
    """

    def __init__(self, socket_paths: Sequence[str], call: rq.Call[Any]) -> None:
        self._paths = list(socket_paths)
        self.socket_path = likely_socket(self._paths)   # until connected
        self._data = encode(rq.message(call.op, 1, call.args))  # a bad value raises here
        self._streams: Streams | None = None
        self._closed = False

    async def open(self) -> AsyncWatchStream:
        """Connect and wait for the daemon's ack (raises its error, e.g. NotFound)."""
        if self._streams is None:
            self._streams, self.socket_path = await open_first(self._paths)
            try:
                await self._subscribe(*self._streams)
            except BaseException:
                await self.aclose()
                raise
        return self

    async def _subscribe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self._data)
        while True:
            msg = decode(await self._read(reader))
            if msg is not None and msg.get("id") in (1, None) and "ok" in msg:
                rq.check(msg)
                return

    def __await__(self) -> Generator[Any, None, AsyncWatchStream]:
        return self.open().__await__()

    def __aiter__(self) -> AsyncWatchStream:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        await self.open()
        assert self._streams is not None  # open() sets it or raises
        reader = self._streams[0]
        while True:
            msg = decode(await self._read(reader))
            event = rq.event_from(msg) if msg is not None else None
            if event is not None:
                return event

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await read_line(reader)
        except _Lost as exc:
            if self._closed:
                raise StopAsyncIteration from None
            await self.aclose()
            raise DaemonUnavailable(self.socket_path, f"watch connection lost: {exc}") from None

    async def aclose(self) -> None:
        """Stop watching; a task blocked in iteration ends cleanly."""
        self._closed = True
        if self._streams is not None:
            await close_stream(self._streams[1])

    async def __aenter__(self) -> AsyncWatchStream:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
