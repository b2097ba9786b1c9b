"""The daemon: wires the parts together and owns the lifecycle.

Startup order matters: handler modules are imported and the fork server is
forked *before* the event loop exists; then the WAL is replayed, the socket
starts listening, and systemd is told READY=1.

Every loop turn that did anything ends in `tick()`: dispatch pending jobs to
idle workers, write the WAL buffer (one write, one fsync for the whole turn),
and write each connection's replies (one write per connection).
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import grp
import logging
import os
import signal
import socket
import stat
import time

from jobd import config as config_mod
from jobd import constants as C
from jobd import handlers
from jobd.config import Config
from jobd.core.job import Job
from jobd.core.state import State
from jobd.jobs import JobQueue
from jobd.pool import child as worker
from jobd.pool import forkserver
from jobd.pool.arbiter import Pool
from jobd.runtime.gcpolicy import GcPolicy
from jobd.runtime.idlepoll import IdlePoller
from jobd.runtime.metrics import Metrics
from jobd.scheduling import specs as schedspec
from jobd.scheduling.scheduler import Scheduler
from jobd.server import http as httpmetrics
from jobd.server.connection import Server
from jobd.server.events import EventHub
from jobd.server.ops import Ops
from jobd.storage import records as R
from jobd.storage import wal as journal
from jobd.storage.results import ResultStore, file_stem
from jobd.storage.wal import Journal
from jobd.systemd import Notifier, listen_unix_socket

log = logging.getLogger("jobd")


class StartupError(Exception):
    """A clear, one-line reason the daemon cannot start."""


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.clock = time.time
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.handlers = handlers.registry()
        self.state = State()
        self.events = EventHub(cfg.server.max_unsent_bytes // 2)
        self.notifier = Notifier(None)
        self.server: Server | None = None
        self.gc = GcPolicy()
        self._tick_scheduled = False
        self.poller = IdlePoller(cfg.server.busy_poll_us / 1e6) if cfg.server.busy_poll_us else None
        self._polling = False
        self._poll_until = 0.0
        self._sync_replies = cfg.wal.fsync == "always"
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._stop: asyncio.Event | None = None
        self._exit_code = C.EXIT_OK
        self._lock_fd: int | None = None
        self.sock: socket.socket | None = None
        self.activated = False

    # --- startup before the loop ---------------------------------------------------------
    def prepare(self) -> None:
        """Everything that must happen before the loop: dirs, lock, handlers, socket, fork."""
        try:
            handlers.load_modules(self.cfg.handlers)
        except Exception as e:  # noqa: BLE001 - any import failure is a startup error
            raise StartupError(f"cannot import handler module: {type(e).__name__}: {e}") from e
        # Config errors that need the handlers (exit 78) come before the data dir is touched.
        schedspec.check_config(self.cfg.schedule, self.handlers)
        config_mod.check_handler_names(self.cfg, self.handlers)
        self._prepare_data_dir()
        self.sock = self._listening_socket()
        hb = self.cfg.workers.heartbeat_interval
        self.fs = forkserver.start(lambda sock, wid: worker.main(sock, wid, hb), (self.sock,))

    def _prepare_data_dir(self) -> None:
        path = self.cfg.data_dir
        try:
            config_mod.ensure_dir(path)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable")
            fd = os.open(os.path.join(path, "jobd.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StartupError(f"data dir {path} is not usable: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(f"data dir {path} is in use by another jobd") from None
        self._lock_fd = fd

    def _listening_socket(self) -> socket.socket:
        inherited = listen_unix_socket()
        if inherited is not None:
            self.activated = True
            log.info("using the socket passed by systemd (socket activation)")
            return inherited
        path = self.cfg.server.socket
        _make_socket_dir(os.path.dirname(path) or ".", bool(self.cfg.server.socket_group))
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            raise StartupError(f"cannot bind socket {path}: {e.strerror}") from e
        finally:
            os.umask(old)
        self._set_socket_access(path)
        sock.listen(1024)
        return sock

    def _set_socket_access(self, path: str) -> None:
        group = self.cfg.server.socket_group
        if group:
            try:
                os.chown(path, -1, grp.getgrnam(group).gr_gid)
            except (KeyError, PermissionError) as e:
                raise StartupError(f"cannot give socket to group {group!r}: {e}") from e
        os.chmod(path, self.cfg.server.socket_mode)

    # --- the loop ------------------------------------------------------------------------
    async def main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.notifier = Notifier.from_env()     # after the fork: workers don't hold it
        self._recover()
        self.results = ResultStore(os.path.join(self.cfg.data_dir, "results"),
                                   self.cfg.results.inline_max_bytes,
                                   self.cfg.results.compress_min_bytes, self.loop)
        self.queue = JobQueue(self.cfg, self.state, self.journal, self.handlers, self.clock)
        self.queue.on_pending = self.kick
        self.schedules = Scheduler(self)
        self.metrics = Metrics(self)
        self.queue.on_retry_delay = self.metrics.observe_retry_delay
        self.queue.on_evicted = self.metrics.count_evicted
        self.metrics.reset_gauges(self.state.jobs.values())
        self.ops = Ops(self)
        self.server = Server(self.cfg, self.ops, lambda: self.journal.durable, self.kick)
        self.journal.on_durable = self.server.on_durable
        self.journal.on_failed = self.server.on_failed
        self.journal.has_waiters = lambda: bool(self.server.waiting)  # type: ignore[union-attr]
        self.pool = Pool(self, self.fs, self.cfg.workers.count)
        self.state.on_change = self._on_change
        self.pool.start()
        self.schedules.start()
        await self.server.start(self.loop, self.sock)  # type: ignore[arg-type]
        await self._start_http()
        self._install_signals()
        self._start_housekeeping()
        self.schedule_timer()
        self.kick()
        self._ready()
        await self._stop.wait()
        await self._shutdown()
        return self._exit_code

    async def _start_http(self) -> None:
        listen = self.cfg.monitoring.metrics_listen
        self.http = None
        if listen:
            try:
                self.http = await httpmetrics.serve(listen, self.metrics.prometheus)
            except (OSError, ValueError) as e:
                raise StartupError(f"cannot serve metrics on {listen}: {e}") from e

    def _recover(self) -> None:
        wal_dir = os.path.join(self.cfg.data_dir, "wal")
        started = time.monotonic()
        gc.disable()          # a million new objects: the GC would rescan them all
        try:
            segment, offset, count = journal.recover(wal_dir, self.state.replay)
        finally:
            gc.enable()
        self.gc.start()
        requeued = self.state.recover_running()
        elapsed = time.monotonic() - started
        log.info("recovered %d jobs from %d WAL records in %.2fs (%d were running, now pending)",
                 len(self.state.jobs), count, elapsed, len(requeued))
        if self.state.orphan_records:
            log.warning("skipped %d WAL record(s) about jobs whose submit was never written "
                        "(refused with storage_error)", self.state.orphan_records)
        c = self.cfg.wal
        self.journal = Journal(wal_dir, c.fsync, c.fsync_interval_ms, c.segment_bytes, segment,
                               offset, self.loop, lambda seq: None, lambda a, b, w: None)
        self.journal.snapshot_source = self.state.snapshot
        self._cancel_requested_on_restart(requeued)

    def _cancel_requested_on_restart(self, jobs: list[Job]) -> None:
        """A job whose cancel was requested before a crash is not run again."""
        for job in jobs:
            if job.cancel_requested:
                self.journal.append([R.CANCEL, job.id, self.clock()])
                self.state.apply([R.CANCEL, job.id, self.clock()])

    def _ready(self) -> None:
        log.info("jobd %s serving on %s with %d worker(s), data dir %s, fsync=%s",
                 _version(), self.cfg.server.socket, self.pool.target, self.cfg.data_dir,
                 self.cfg.wal.fsync)
        self.notifier.ready()
        self._status()
        interval = self.notifier.watchdog_interval()
        if interval:
            self._watchdog(interval)

    def _status(self) -> None:
        c = self.state.counts
        self.notifier.status(f"{c[C.PENDING]} pending, {c[C.RUNNING]} running, "
                             f"{len(self.pool.workers)} workers")

    # --- per-turn work ----------------------------------------------------------------------
    def kick(self) -> None:
        """Make sure `tick` runs at the end of this loop turn."""
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self.loop.call_soon(self.tick)

    def tick(self) -> None:
        # `_tick_scheduled` stays set while the tick runs: everything a tick
        # step wakes (replies released by the WAL, frames for workers) is
        # handled by the steps after it, so kicks from inside are no-ops.
        try:
            self._tick()
        finally:
            self._tick_scheduled = False

    def _tick(self) -> None:
        if self.poller is not None:
            self.poller.woke(time.perf_counter())
        if self.journal.holds_undoable:
            # Submits reach the file before any job can start: if the write
            # fails they are undone, and no worker has been told to run them.
            self.journal.write_buffer()
        self.pool.dispatch()
        if self._sync_replies:
            # Wake the workers first: they run while the fsync waits for the disk.
            self.pool.flush()
            if self.journal.flush() and self.pool.collect():
                # What workers sent during the fsync (a job done) is handled
                # now: its result leaves with the ack, one wake-up less.
                self.pool.dispatch()
                self.pool.flush()
                self.journal.flush()
            self.server.flush()  # type: ignore[union-attr]
        else:
            # No fsync to overlap: answer clients before a woken worker can
            # take this CPU from us.
            self.journal.flush()
            self.server.flush()  # type: ignore[union-attr]
            self.pool.flush()
        self.schedule_timer()
        if self.pool.dirty or self.server.dirty:  # type: ignore[union-attr]
            self.loop.call_soon(self.kick)        # e.g. a reply released by the last step
        elif self.poller is not None:
            self._keep_polling()

    # --- adaptive busy polling ([server] busy_poll_us, jobd/runtime/idlepoll.py) ----------------
    def _keep_polling(self) -> None:
        """The loop is about to sleep: poll instead for the window the poller
        has learnt, unless a job is running: its worker and the client waiting
        for it need the CPUs more than the loop (jobd/runtime/idlepoll.py)."""
        if self.state.running:
            self.poller.forget()                                    # type: ignore[union-attr]
            return
        now = time.perf_counter()
        window = self.poller.idle(now)                              # type: ignore[union-attr]
        self._poll_until = now + window
        if window and not self._polling:
            self._polling = True
            self.loop.call_soon(self._poll)

    def _poll(self) -> None:
        # A ready callback makes the loop poll with a zero timeout, once per call.
        if time.perf_counter() < self._poll_until and not self.state.running:
            self.loop.call_soon(self._poll)
        else:
            self._polling = False

    def schedule_timer(self) -> None:
        """Arm one loop timer for the earliest scheduled or retrying job."""
        due = self.state.next_due()
        if due is None or (self._timer_due is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self.loop.call_later(max(0.0, due - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        if self.state.promote_due(self.clock()):
            self.kick()
        self.schedule_timer()

    def _on_change(self, job: Job, old: str) -> None:
        """Every status change, live: metrics, events, result waiters, limits."""
        self.metrics.on_change(job, old)
        new = job.status
        if old == C.RUNNING and job.handler in self.pool.dispatcher.parked:
            self.pool.dispatcher.unpark(job.handler)
        if self.events.watchers:        # build event data only when someone listens
            self._publish_change(job, old, new)
        if new in C.TERMINAL and job.id in self.queue.waiters:
            self.queue.notify_terminal(job)

    def _publish_change(self, job: Job, old: str, new: str) -> None:
        publish = self.events.publish
        if old == "":
            publish(C.EV_SUBMITTED, job.id, {"handler": job.handler, "priority": job.priority})
        if new == C.RUNNING:
            publish(C.EV_STARTED, job.id, {"worker_id": job.worker_id, "attempt": job.attempts})
        elif new == C.COMPLETED:
            publish(C.EV_COMPLETED, job.id, {"duration": job.duration()})
        elif new in (C.RETRYING, C.FAILED, C.DEAD_LETTER) and old != new:
            publish(C.EV_FAILED, job.id, {"error": job.error, "will_retry": new == C.RETRYING,
                                          "attempts": job.attempts})
            if new == C.DEAD_LETTER:
                publish(C.EV_DEAD_LETTER, job.id, {"handler": job.handler,
                                                   "final_error": job.error,
                                                   "total_attempts": job.attempts})
        elif new == C.CANCELLED:
            publish(C.EV_CANCELLED, job.id, {})

    def slow_job_check(self, job: Job) -> None:
        limit = self.cfg.monitoring.slow_job_threshold
        took = job.duration()
        if limit and took is not None and took > limit:
            log.warning("slow job %s (%s) took %.3fs (threshold %gs)", job.id, job.handler,
                        took, limit)

    # --- housekeeping -------------------------------------------------------------------------
    def _start_housekeeping(self) -> None:
        self._housekeeping_interval = max(0.05, min(60.0, self.cfg.results.ttl / 4))
        self.loop.call_later(self._housekeeping_interval, self._housekeeping)

    def _housekeeping(self) -> None:
        self.loop.call_later(self._housekeeping_interval, self._housekeeping)
        self.expire()
        self._status()
        self.gc.maybe_collect()

    def expire(self) -> int:
        """Drop finished jobs past results.ttl and dead letters past their limits."""
        self.queue.evict_dead_letters()        # e.g. max_size lowered since the last start
        dl = self.cfg.dead_letter
        ids = self.state.expired(self.clock(), self.cfg.results.ttl, dl.retention_days * 86400.0)
        if ids:
            self.queue.commit([R.DELETE, ids])
            self.sweep_results()
            self.kick()
        return len(ids)

    def sweep_results(self) -> None:
        live = {file_stem(j.id) for j in self.state.jobs.values() if j.result_ref}
        self.results.forget_missing(lambda stem: stem in live)

    def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 at half of WATCHDOG_USEC, from the loop: a stuck loop stops it."""
        self.notifier.watchdog()
        self.loop.call_later(interval, self._watchdog, interval)

    # --- signals and shutdown ------------------------------------------------------------------
    def _install_signals(self) -> None:
        self.loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        self.loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)

    def request_stop(self, why: str = "") -> None:
        assert self._stop is not None
        if self._stop.is_set():
            if why == "SIGINT":
                log.warning("second SIGINT: stopping now")
                os._exit(1)
            return
        log.info("%s received: stopping gracefully (up to %gs for running jobs)",
                 why or "stop", self.cfg.workers.shutdown_timeout)
        self._stop.set()

    def fatal(self, why: str) -> None:
        log.critical(why)
        self._exit_code = C.EXIT_FAILURE
        if self._stop is not None:
            self._stop.set()

    def reload(self) -> None:
        """SIGHUP: re-read the config's reloadable parts (worker count, log level, schedules)."""
        if not self.cfg.config_path:
            log.info("SIGHUP: no config file to reload")
            return
        try:
            fresh = config_mod.load(self.cfg.config_path, overrides=self.cfg.overrides)
        except config_mod.ConfigError as e:
            log.error("SIGHUP: config not reloaded: %s", e)
            return
        except Exception as e:  # noqa: BLE001 - a reload must never take the daemon down
            log.error("SIGHUP: config not reloaded: %s: %s", type(e).__name__, e)
            return
        logging.getLogger().setLevel(fresh.log_level.upper())
        self.cfg.log_level = fresh.log_level
        if fresh.workers.count != self.pool.target:
            self.pool.scale(fresh.workers.count)
        applied = f"workers={fresh.workers.count}, log_level={fresh.log_level}"
        try:
            self.schedules.apply_config(fresh.schedule)
        except config_mod.ConfigError as e:
            # The summary line says what was not applied: it is the one people read.
            log.error("SIGHUP: config partly reloaded (%s); schedules not reloaded, "
                      "they stay as they were: %s", applied, e)
            return
        log.info("SIGHUP: config reloaded (%s)", applied)

    async def _shutdown(self) -> None:
        # Keep listening while running jobs finish: a client that connects now
        # is answered (`unavailable` for submits, the truth for the rest), not
        # left waiting in the backlog.
        self.notifier.stopping()
        self.queue.accepting = False
        assert self.server is not None
        if self.http is not None:
            self.http.close()
        await self.pool.shutdown(self.cfg.workers.shutdown_timeout)
        await self.results.drain()          # results still being written: record them
        self.server.stop_listening()
        self.tick()
        self.journal.close()
        self.server.close_all()
        self.fs.close()
        if not self.activated:
            _unlink_quiet(self.cfg.server.socket)
        log.info("jobd stopped")

    def abandon(self) -> None:
        """Startup failed after the socket was bound: leave no socket file behind."""
        if self.sock is not None and not self.activated:
            self.sock.close()
            _unlink_quiet(self.cfg.server.socket)


def _version() -> str:
    from jobd import __version__
    return __version__


def _make_socket_dir(path: str, group_access: bool) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o750 if group_access else 0o700, exist_ok=True)


def _remove_stale_socket(path: str) -> None:
    """A socket file whose daemon is dead is removed; a live one is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        _unlink_quiet(path)
        return
    except OSError as e:
        raise StartupError(f"cannot check socket {path}: {e.strerror}") from e
    finally:
        probe.close()
    raise StartupError(f"socket {path} is in use by a live jobd")


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
