"""Blocking client: one Unix socket, one call at a time (a call may pipeline a batch).

What each method sends and returns is defined once in `_requests`; this module
only moves lines. A broken connection is reconnected once per call and the
request resent when that is harmless (submits always carry a job_id).
"""
from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import IO, Any, TypeVar, Unpack

from . import _requests as rq
from ._requests import JobFilter, ListFilter, MoreFilters
from ._wire import decode, encode
from .errors import DaemonUnavailable, no_daemon
from .models import Event, Job, Page
from .paths import client_socket_candidates, likely_socket

T = TypeVar("T")
# Aliases at module level: inside the classes `list` names the method.
Args = list[Any]
Dicts = list[dict[str, Any]]
Strings = list[str]
Statuses = str | list[str] | None
# Errors meaning "the peer went away": reconnect and resend once.
_BROKEN = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Broken(Exception):
    """The connection died mid-call (EOF or reset); internal to this module.
    `sent`: the request may have reached the daemon."""

    def __init__(self, why: str, sent: bool = True) -> None:
        super().__init__(why)
        self.sent = sent


def open_socket(path: str, timeout: float | None) -> socket.socket:
    """Connect to the daemon at `path`; OSError when nothing answers there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def connect_first(paths: Sequence[str], timeout: float | None) -> tuple[socket.socket, str]:
    """The first of `paths` that accepts a connection, and which it was.

    DaemonUnavailable names every path tried, why each failed, and how to
    start or point to a daemon.
    """
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            return open_socket(path, timeout), path
        except OSError as exc:
            failures.append((path, exc.strerror or str(exc)))
    raise no_daemon(failures)


def find_socket(socket_path: str | None = None, timeout: float | None = 5.0) -> str:
    """The socket a `Client(socket_path)` would talk to, found by connecting.

    The path given, else `$JOBD_SOCKET`, else the system service's socket
    (/run/jobd/jobd.sock) when a daemon answers there, else this user's
    (`default_socket_path()`). Raises DaemonUnavailable naming all it tried.
    """
    sock, path = connect_first(client_socket_candidates(socket_path), timeout)
    sock.close()
    return path


def read_line(reader: IO[bytes]) -> bytes:
    """Read one full line; a missing newline means the daemon closed the connection."""
    try:
        line = reader.readline()
    except _BROKEN as exc:
        raise _Broken(str(exc)) from exc
    if not line.endswith(b"\n"):
        raise _Broken("daemon closed the connection")
    return line


class Client:
    """Blocking client; connects on first use, safe to share between threads (calls serialise).

    With no `socket_path` (and no `$JOBD_SOCKET`) the first connection tries
    the system service's socket, then this user's; the one that answered is
    kept for reconnects, so a restart never sends the client to another daemon.
    `timeout` bounds connecting and each reply (None: wait forever). For
    `result`/`wait`, the time the daemon may hold the reply is added to it.
    A call that times out raises TimeoutError and drops the connection, since
    its late reply would otherwise answer the next call.
    """

    def __init__(self, socket_path: str | None = None, timeout: float | None = None) -> None:
        self._candidates = client_socket_candidates(socket_path)
        self._found: str | None = socket_path or None
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: IO[bytes] | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def socket_path(self) -> str:
        """The socket in use: given, or found by the first connection. Before
        that, the first candidate that exists (a guess: it may not answer)."""
        return self._found if self._found is not None else likely_socket(self._candidates)

    # --- connection --------------------------------------------------------

    def connect(self) -> Client:
        """Connect now (instead of on first call) so a missing daemon shows early."""
        with self._lock:
            self._connection()
        return self

    def close(self) -> None:
        """Close the connection; a later call reconnects."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _paths(self) -> list[str]:
        """Where to connect: every candidate until one answered, then only that one."""
        return self._candidates if self._found is None else [self._found]

    def _connection(self) -> tuple[socket.socket, IO[bytes]]:
        if self._sock is None or self._reader is None:
            self._sock, self._found = connect_first(self._paths(), self.timeout)
            self._reader = self._sock.makefile("rb")
        return self._sock, self._reader

    def _drop(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None

    # --- round trips --------------------------------------------------------------

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send any op (None-valued arguments omitted); return the reply body or raise JobdError."""
        return self._run(rq.generic(op, args))

    def _run(self, call: rq.Call[T]) -> T:
        value: T
        (value,) = self._run_batch([call])
        return value

    def _run_batch(self, calls: rq.Batch) -> list[Any]:
        """Send `calls` pipelined (encoded first: a bad value sends nothing); their
        decoded replies in order, or the first error reply raised."""
        requests = [rq.message(c.op, next(self._ids), c.args) for c in calls]
        data = b"".join([encode(r) for r in requests])
        ids = [r["id"] for r in requests]
        hold = max(c.hold for c in calls)
        with self._lock:
            replies = self._roundtrip(data, ids, hold, {c.op for c in calls})
        for request_id in ids:          # an error reply may have cut the batch short
            if request_id in replies:
                rq.check(replies[request_id])
        return [c.decode(replies[i]) for c, i in zip(calls, ids)]

    def _roundtrip(self, data: bytes, ids: list[int], hold: float,
                   ops: set[str]) -> dict[int, dict[str, Any]]:
        for attempt in range(2):
            try:
                return self._exchange(data, ids, hold)
            except _Broken as exc:
                self._drop()
                unsafe = sorted(ops - rq.RESENDABLE)
                if exc.sent and unsafe:
                    raise DaemonUnavailable(self.socket_path, rq.lost_after_send(unsafe[0])) from None
                if attempt:
                    raise DaemonUnavailable(self.socket_path, f"connection lost: {exc}") from None
        raise AssertionError("unreachable")

    def _exchange(self, data: bytes, ids: list[int], hold: float) -> dict[int, dict[str, Any]]:
        sock, reader = self._connection()
        sock.settimeout(None if self.timeout is None else self.timeout + hold)
        try:
            sock.sendall(data)
        except _BROKEN as exc:             # the peer was gone already: nothing was applied
            raise _Broken(str(exc), sent=False) from exc
        except TimeoutError:
            self._drop()
            raise
        try:
            replies = self._read_replies(reader, ids)
        except _BROKEN as exc:
            raise _Broken(str(exc)) from exc
        except TimeoutError:
            self._drop()
            raise
        if len(replies) < len(ids):        # an error cut the batch short: drop the rest's
            self._drop()                   # late replies (and the daemon's parked waits)
        return replies

    @staticmethod
    def _read_reply(reader: IO[bytes], request_id: int) -> dict[str, Any]:
        return Client._read_replies(reader, [request_id])[request_id]

    @staticmethod
    def _read_replies(reader: IO[bytes], ids: list[int]) -> dict[int, dict[str, Any]]:
        """The replies to `ids`, read until all came or one is an error.

        Stale lines are skipped; an id-less error is the daemon failing to
        parse one of our lines (e.g. request_too_large): it answers the first
        still unanswered.
        """
        wanted = set(ids)
        replies: dict[int, dict[str, Any]] = {}
        while len(replies) < len(ids):
            msg = decode(read_line(reader))
            if msg is None:
                continue
            request_id = msg.get("id")
            if request_id is None and msg.get("ok") is False:
                request_id = next(i for i in ids if i not in replies)
            if request_id in wanted and request_id not in replies:
                replies[request_id] = msg
                if msg.get("ok") is not True:
                    break
        return replies

    def _drive(self, steps: rq.Steps[T]) -> T:
        """Run a multi-call generator from `_requests`, feeding it each batch's replies."""
        try:
            batch = next(steps)
            while True:
                batch = steps.send(self._run_batch(batch))
        except StopIteration as done:
            value: T = done.value
            return value

    def hello(self) -> dict[str, Any]:
        """Daemon version, protocol number and registered handler names."""
        return self._run(rq.hello())

    def submit(self, handler: str, args: Args | None = None,
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
        return self._run(rq.submit(handler, args, kwargs, options))

    def submit_many(self, jobs: Dicts) -> Strings:
        """Queue several jobs all-or-nothing; entries without a job_id get one."""
        return self._run(rq.submit_many(jobs))

    def status(self, job_id: str) -> Job:
        """The job view; a completed job's `result` is filled in too."""
        return self._drive(rq.status_steps(job_id))

    def progress(self, job_id: str) -> dict[str, Any] | None:
        """The job's last progress report, or None."""
        return self._run(rq.progress(job_id))

    def result(self, job_id: str, wait: float | None = None) -> dict[str, Any]:
        """The outcome, waiting up to `wait` s for the job to finish (result None if not)."""
        return self._run(rq.result(job_id, wait))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job, with its result, once it is terminal (completed, failed,
        cancelled or dead_letter: check `job.ok`). Raises WaitTimeout, whose
        `.job` is its last view, if it is not terminal within `timeout` s."""
        return self._drive(rq.wait_steps([job_id], timeout))[0]

    def wait_many(self, job_ids: Sequence[str], timeout: float | None = None) -> list[Job]:
        """The jobs, in the order of `job_ids`, once all are terminal. Raises
        WaitTimeout (`.job` the first unfinished, `.jobs` every last view) if
        they are not within `timeout` s. The waits are pipelined, not polled."""
        return self._drive(rq.wait_steps(job_ids, timeout))

    def cancel(self, job_id: str, force: bool = False) -> bool:
        """True when the job is now cancelled (a running job needs `force`)."""
        return self._run(rq.cancel(job_id, force))

    def list(self, status: Statuses = None, handler: str | None = None,
             tag: str | None = None, limit: int = 100, offset: int = 0,
             queue: str | None = None, **where: Unpack[MoreFilters]) -> Page:
        """Jobs in submit order, filtered by any field of the bulk filter
        (`tag` is "key=value"; also `created_before`, `created_after`,
        `error_match`, `ids`, `signature`); `Page.total` counts every match."""
        return self._run(rq.list_jobs(status, handler, tag, limit, offset, queue, where))

    def dead_letters(self, limit: int = 100, offset: int = 0,
                     **where: Unpack[ListFilter]) -> Page:
        """Jobs whose retries are exhausted, filtered as `list` (e.g. `signature=`)."""
        return self._run(rq.dead_letters(limit, offset, where))

    def failure_groups(self, status: str | None = None, queue: str | None = None,
                       handler: str | None = None, limit: int | None = None) -> Dicts:
        """Dead-letter (default) or `failed` jobs grouped by what went wrong, largest
        first: `signature`, `handler`, `error_type`, `message` (normalised),
        `count`, `first_seen`, `last_seen`, `sample_ids`. Retry or purge a group
        with `retry_many(signature=...)` / `purge(signature=...)`."""
        return self._run(rq.failure_groups(status, queue, handler, limit))

    def retry(self, job_id: str) -> str:
        """Run a dead-lettered, failed or cancelled job again; returns its new status."""
        return self._run(rq.retry(job_id))

    def purge(self, status: Statuses = None, older_than: float | None = None,
              **where: Unpack[JobFilter]) -> int:
        """Delete finished jobs (older than `older_than` s, matching the filter
        fields given: `queue`, `handler`, `tag`, ...); returns how many."""
        return self._run(rq.purge(status, older_than, where))

    def metrics(self, format: str = "json") -> Any:
        """The metrics object, or the Prometheus text when format="prometheus"."""
        return self._run(rq.metrics(format))

    def workers(self) -> Dicts:
        """One dict per worker process."""
        return self._run(rq.workers())

    def scale(self, count: int, queue: str | None = None) -> dict[str, Any]:
        """Set the worker count of a queue's pool (default `default`); returns
        `previous` and `target`."""
        return self._run(rq.scale(count, queue))

    def restart_worker(self, worker_id: Any) -> bool:
        """Recycle one worker process."""
        return self._run(rq.restart_worker(worker_id))

    def watch(self, job_id: str | None = None, events: Strings | None = None) -> WatchStream:
        """Stream events over a new connection; returns once the daemon acknowledged."""
        return WatchStream(self._paths(), self.timeout, rq.watch(job_id, events))

    def schedule_add(self, name: str, cron: str, handler: str, args: Args | None = None,
                     kwargs: dict[str, Any] | None = None, timezone: str = "UTC",
                     **submit_options: Any) -> dict[str, Any]:
        """Add a cron schedule that submits `handler` jobs."""
        call = rq.schedule_add(name, cron, handler, args, kwargs, timezone, submit_options)
        return self._run(call)

    def schedule_list(self) -> Dicts:
        """All schedules with their next and last run."""
        return self._run(rq.schedule_list())

    def schedule_remove(self, name: str) -> bool:
        """Remove a schedule; False when there was none."""
        return self._run(rq.schedule_remove(name))

    def logs(self, job_id: str, offset: int = 0) -> dict[str, Any]:
        """What the job printed and logged, from `offset`: `text`, `offset` (pass
        it back to continue), `truncated`, `complete` (the job is terminal)."""
        return self._run(rq.logs(job_id, offset))

    def reload(self) -> dict[str, Any]:
        """Re-import the handler modules: `reloaded`, `handlers_added`,
        `handlers_removed`, `error` (why not, the old code still serving)."""
        return self._run(rq.reload())

    def handlers(self) -> Dicts:
        """The registered handlers, as the daemon describes them (queue, state,
        paused, pending, running, held, options)."""
        return self._run(rq.handlers())

    # --- flow control ---------------------------------------------------------------

    def queues(self) -> Dicts:
        """One dict per queue: name, workers, paused, rate, max_size, counts, held."""
        return self._run(rq.queues())

    def pause(self, queue: str | None = None, handler: str | None = None,
              for_s: float | None = None, reason: str | None = None) -> dict[str, Any]:
        """Hold the jobs of a queue or of a handler (exactly one), for `for_s`
        seconds or until `resume`. Returns the pause: `queue` or `handler`,
        `since`, `until`, `reason`, `by_uid`. Running jobs finish."""
        return self._run(rq.pause(queue, handler, for_s, reason))

    def resume(self, queue: str | None = None, handler: str | None = None) -> bool:
        """Lift a pause; False when it was not paused."""
        return self._run(rq.resume(queue, handler))

    def breaker_reset(self, handler: str) -> bool:
        """Close the handler's circuit breaker; False when it was closed."""
        return self._run(rq.breaker_reset(handler))

    def quarantine(self, handler: str, reason: str | None = None) -> dict[str, Any]:
        """Hold every job of the handler until `release`: returns `reason`, `since`."""
        return self._run(rq.quarantine(handler, reason))

    def release(self, handler: str) -> bool:
        """Lift the handler's quarantine (its breaker closes and forgets its
        trips); False when it was not quarantined."""
        return self._run(rq.release(handler))

    def cancel_many(self, *, status: Statuses = None, force: bool = False, dry_run: bool = False,
                    **where: Unpack[JobFilter]) -> dict[str, Any]:
        """Cancel the jobs matching the filter: `matched`, `cancelled`, `sample`
        (up to 5 ids). `dry_run` only counts. Running jobs need `force`."""
        return self._run(rq.cancel_many(status, where, force, dry_run))

    def retry_many(self, *, status: Statuses = None, dry_run: bool = False,
                   **where: Unpack[JobFilter]) -> dict[str, Any]:
        """Run the matching dead-lettered, failed and cancelled jobs again:
        `matched`, `retried`, `sample`. `dry_run` only counts."""
        return self._run(rq.retry_many(status, where, dry_run))

    def replay(self, job_id: str, args: Args | None = None, kwargs: dict[str, Any] | None = None,
               priority: int | str | None = None, queue: str | None = None,
               delay: float | None = None) -> str:
        """A new job from a terminal one (its handler, args, options; those given
        here replace them); returns the new job's id. The original is untouched."""
        return self._run(rq.replay(job_id, args, kwargs, priority, queue, delay))


    # --- alerts ---------------------------------------------------------------------

    def alerts(self) -> Dicts:
        """The firing alerts: fingerprint, rule, labels, annotations, since, last_sent."""
        return self._run(rq.alerts())

    def alert_test(self) -> dict[str, Any]:
        """Send the test alert (alertname `JobdTest`) to the configured command and
        webhook: `queued` (false when neither is configured), `targets`, `fingerprint`."""
        return self._run(rq.alert_test())


class WatchStream:
    """Iterator of Events on its own connection, so the client stays usable meanwhile.

    `close()` (also from another thread) ends the iteration. A connection the
    daemon drops raises DaemonUnavailable: silently ending would hide lost events.
    """

    def __init__(self, socket_paths: Sequence[str], timeout: float | None,
                 call: rq.Call[Any]) -> None:
        self._closed = False
        data = encode(rq.message(call.op, 1, call.args))
        self._sock, self.socket_path = connect_first(socket_paths, timeout)
        self._reader = self._sock.makefile("rb")
        try:
            self._subscribe(data)
        except BaseException:
            self.close()
            raise
        self._sock.settimeout(None)  # events may be minutes apart

    def _subscribe(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
            rq.check(Client._read_reply(self._reader, 1))
        except (_Broken, *_BROKEN) as exc:
            raise DaemonUnavailable(self.socket_path, f"connection lost: {exc}") from None

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while True:
            msg = decode(self._next_line())
            event = rq.event_from(msg) if msg is not None else None
            if event is not None:
                return event

    def _next_line(self) -> bytes:
        try:
            return read_line(self._reader)
        except (_Broken, OSError, ValueError) as exc:
            if self._closed:
                raise StopIteration from None
            self.close()
            raise DaemonUnavailable(self.socket_path, f"watch connection lost: {exc}") from None

    def close(self) -> None:
        """Stop watching; wakes a thread blocked in iteration."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):  # already disconnected
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
