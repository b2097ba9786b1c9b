"""The running daemon: builds the parts, runs the loop turn, handles signals and stops.

Startup before the loop (handler modules, data dir, socket, fork server) is
jobd/boot.py. Here, on the running loop, `Daemon(...)` recovers the WAL and
builds every part complete, in dependency order (each is handed the narrow
ports it calls, never the daemon); `run()` then serves until a signal.

Every loop turn that did anything ends in `tick()`: dispatch pending jobs to
idle workers, write the WAL buffer (one write, one fsync for the whole turn),
and write each connection's replies (one write per connection).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from typing import Any

from jobd import config as config_mod
from jobd import constants as C
from jobd import handlers
from jobd.alerts.inputs import DaemonSources
from jobd.alerts.service import AlertService
from jobd.boot import Boot, unlink_quiet
from jobd.bulk import Bulk
from jobd.config import Config
from jobd.control import Control, handler_flows, queue_specs
from jobd.core.job import Job
from jobd.core.lifecycle import Lifecycle
from jobd.errors import ConfigError, StartupError
from jobd.jobs import Jobs
from jobd.pool import forkserver
from jobd.pool.arbiter import Arbiter
from jobd.pool.dispatch import Dispatcher
from jobd.pool.handle import Workers
from jobd.runtime.classify import Classifier
from jobd.runtime.gcpolicy import GcPolicy
from jobd.runtime.idlepoll import IdlePoller
from jobd.runtime.metrics import Recorder, Sources
from jobd.scheduling.scheduler import Scheduler
from jobd.scheduling.timers import DueTimer
from jobd.server import http
from jobd.server.connection import Connection, Server
from jobd.server.events import EventHub
from jobd.server.ops import Ops, Services
from jobd.storage import wal
from jobd.storage.logs import JobLogs
from jobd.storage.results import ResultStore, file_stem
from jobd.storage.store import WalStore
from jobd.systemd import Notifier

log = logging.getLogger("jobd")
MiB = 1024 * 1024
RELOAD_TIMEOUT_S = 120.0         # most a fresh fork server may take to import the code


class Daemon:
    def __init__(self, cfg: Config, boot: Boot, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.boot = boot
        self.loop = loop
        self.clock = time.time
        self._tick_scheduled = False
        self._stop = asyncio.Event()
        self._exit_code = C.EXIT_OK
        self._sync_replies = cfg.wal.fsync == "always"
        self.notifier = Notifier.from_env()     # after the fork: workers don't hold it
        self.gc = GcPolicy()
        self.poller = IdlePoller(cfg.server.busy_poll_us / 1e6) if cfg.server.busy_poll_us else None
        self._polling = False
        self._poll_until = 0.0
        self._reloading: asyncio.Future[dict[str, Any]] | None = None
        self._build()

    def _build(self) -> None:
        """Recover, then build every part, each after what it needs."""
        cfg, loop, clock, wake = self.cfg, self.loop, self.clock, self.kick
        self.life, self.wal, requeued = self._recover()
        self.store = WalStore(self.life, self.wal)
        self.results = ResultStore(os.path.join(cfg.data_dir, "results"),
                                   cfg.results.inline_max_bytes, cfg.results.compress_min_bytes, loop)
        self.recorder = Recorder(cfg.monitoring.slow_job_threshold)
        self.recorder.reset_gauges(self.store.scan())
        self.store.listen(self.recorder.on_change)
        self.logs = JobLogs(os.path.join(cfg.data_dir, "logs"), cfg.results.log_max_bytes, file_stem)
        self.jobs = Jobs(cfg, self.store, self.boot.handlers, self.results, self.logs,
                         self.recorder, wake, clock)
        self.jobs.cancel_interrupted(requeued)
        self.events = EventHub(self.store, cfg.server.max_unsent_bytes // 2)
        self.workers = Workers(loop, self.life.ready.queue)
        self.dispatcher = Dispatcher(
            store=self.store, outcomes=self.jobs, workers=self.workers,
            prefetch=cfg.workers.prefetch, memory_limit=cfg.workers.max_memory_mb * MiB,
            clock=clock)
        self.arbiter = Arbiter(
            forkserver=self.boot.forkserver, cfg=cfg.workers, loop=loop, outcomes=self.jobs,
            dispatcher=self.dispatcher, workers=self.workers, events=self.events, wake=wake,
            fatal=self.fatal)
        self.jobs.runner = self.arbiter
        self.control = Control(cfg=cfg, store=self.store, handlers=self.boot.handlers,
                               take_back=self.dispatcher, events=self.events, loop=loop,
                               clock=clock, wake=wake)
        self.jobs.guard = self.control
        pools = self.workers.pools
        self.control.pool_size = lambda name: pools[name].target if name in pools else 0
        self._size_pools(startup=True)
        self.scheduler = Scheduler(store=self.store, jobs=self.jobs, handlers=self.boot.handlers,
                                   loop=loop, wake=wake, clock=clock)
        self.timer = DueTimer(store=self.store, loop=loop, clock=clock, wake=wake)
        self.alerts = self._build_alerts()
        connections: set[Connection] = set()
        sources = Sources(counts=self.life.table.counts, pool=self.arbiter.counts, wal=self.wal,
                          poller=self.poller, connections=connections.__len__,
                          flow=self.control, alerts_firing=self.alerts.firing_counts)
        self.bulk = Bulk(jobs=self.jobs, store=self.store, runner=self.arbiter, loop=loop,
                         clock=clock)
        self.classifier = Classifier(groups=self.life.table.failures, loop=loop)
        ops = Ops(Services(jobs=self.jobs, control=self.control, bulk=self.bulk,
                           store=self.store, arbiter=self.arbiter,
                           scheduler=self.scheduler, events=self.events, recorder=self.recorder,
                           sources=sources, results=self.results, reload=self.reload_code,
                           loop=loop, clock=clock, alerts=self.alerts,
                           classifier=self.classifier))
        journal = self.wal
        self.server = Server(cfg.server, ops.table, lambda: journal.durable, wake, connections)
        self.wal.listeners.append(self.server)
        self.sources = sources

    def _build_alerts(self) -> AlertService:
        """The alert rules read the journal, the recorder, the queues and the handlers."""
        inputs = DaemonSources(journal=self.wal, recorder=self.recorder,
                               queues=self.life.ready.queues, handlers=self.life.ready.handlers,
                               clock=self.clock)
        try:
            return AlertService(settings=self.cfg.alerts, data_dir=self.cfg.data_dir,
                                sources=inputs, events=self.events, loop=self.loop,
                                clock=self.clock)
        except (OSError, ValueError) as e:      # the webhook secret went away since the check
            raise StartupError(f"alerts: {e}") from e

    def _recover(self) -> tuple[Lifecycle, wal.Journal, list[Job]]:
        """Replay the WAL into a new Lifecycle; open the log for appending."""
        life = Lifecycle(framing=wal.FRAMING)
        # Limits and pauses are known before replay: start records replayed
        # take from the rate limiters, pause records override the config.
        life.ready.configure(queue_specs(self.cfg),
                             handler_flows(self.boot.handlers, self.cfg.handler, self.cfg.breaker),
                             time.time())
        wal_dir = os.path.join(self.cfg.data_dir, "wal")
        started = time.monotonic()
        gc.disable()          # a million new objects: the GC would rescan them all
        life.table.failures.defer()     # grouped once serving (jobd/runtime/classify.py)
        try:
            segment, offset, count = wal.recover(wal_dir, life.replay)
        finally:
            gc.enable()
            life.table.failures.replayed()
        self.gc.start()
        requeued = life.recover_running()
        log.info("recovered %d jobs from %d WAL records in %.2fs (%d were running, now pending)",
                 len(life.table), count, time.monotonic() - started, len(requeued))
        if life.table.orphan_records:
            log.warning("skipped %d WAL record(s) about jobs whose submit was never written "
                        "(refused with storage_error)", life.table.orphan_records)
        c = self.cfg.wal
        journal = wal.Journal(wal_dir, c.fsync, c.fsync_interval_ms, c.segment_bytes, segment,
                              offset, self.loop, life.snapshot)
        return life, journal, requeued

    # --- running -----------------------------------------------------------------------------
    async def run(self) -> int:
        self.arbiter.start()
        self.scheduler.start(self.cfg.schedule)
        await self.server.start(self.loop, self.boot.sock)
        self.http = await self._start_http()
        self._install_signals()
        self._start_housekeeping()
        self.timer.arm()
        self.control.arm()
        self.alerts.start()
        self.classifier.start()         # the failed jobs replay left ungrouped
        self.kick()
        self._ready()
        await self._stop.wait()
        await self._shutdown()
        return self._exit_code

    async def _start_http(self) -> asyncio.AbstractServer | None:
        listen = self.cfg.monitoring.metrics_listen
        if not listen:
            return None
        from jobd.runtime.metrics import prometheus
        try:
            return await http.serve(listen, lambda: prometheus(self.recorder, self.sources))
        except (OSError, ValueError) as e:
            raise StartupError(f"cannot serve metrics on {listen}: {e}") from e

    def _ready(self) -> None:
        log.info("jobd %s serving on %s with %d worker(s), data dir %s, fsync=%s",
                 _version(), self.cfg.server.socket, self.arbiter.target, self.cfg.data_dir,
                 self.cfg.wal.fsync)
        self.notifier.ready()
        self._status()
        interval = self.notifier.watchdog_interval()
        if interval:
            self._watchdog(interval)

    def _status(self) -> None:
        c = self.life.table.counts
        self.notifier.status(f"{c[C.PENDING]} pending, {c[C.RUNNING]} running, "
                             f"{len(self.workers)} workers")

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
        log_, arbiter, server = self.wal, self.arbiter, self.server
        if log_.holds_undoable:
            # Submits reach the file before any job can start: if the write
            # fails they are undone, and no worker has been told to run them.
            log_.write_buffer()
        arbiter.dispatch()
        if self.logs.pending:
            self.logs.flush()                    # jobs' output: one append per job per turn
        if self._sync_replies:
            # Wake the workers first: they run while the fsync waits for the disk.
            arbiter.flush()
            if log_.flush(bool(server.waiting)) and arbiter.collect():
                # What workers sent during the fsync (a job done) is handled
                # now: its result leaves with the ack, one wake-up less.
                arbiter.dispatch()
                arbiter.flush()
                log_.flush(bool(server.waiting))
            server.flush()
        else:
            # No fsync to overlap: answer clients before a woken worker can
            # take this CPU from us.
            log_.flush(bool(server.waiting))
            server.flush()
            arbiter.flush()
        self.timer.arm()
        wakeups = self.life.ready.wakeups
        if wakeups and (self.control.timer.at is None or wakeups[0][0] < self.control.timer.at):
            self.control.arm()
        if self.workers.dirty or server.dirty:
            self.loop.call_soon(self.kick)        # e.g. a reply released by the last step
        elif self.poller is not None:
            self._keep_polling(self.poller)

    # --- adaptive busy polling ([server] busy_poll_us, jobd/runtime/idlepoll.py) ----------
    def _keep_polling(self, poller: IdlePoller) -> None:
        """The loop is about to sleep: poll instead for the window the poller
        has learnt, unless a job is running: its worker and the client waiting
        for it need the CPUs more than the loop (jobd/runtime/idlepoll.py)."""
        if self.life.table.running:
            poller.forget()
            return
        now = time.perf_counter()
        window = poller.idle(now)
        self._poll_until = now + window
        if window and not self._polling:
            self._polling = True
            self.loop.call_soon(self._poll)

    def _poll(self) -> None:
        # A ready callback makes the loop poll with a zero timeout, once per call.
        if time.perf_counter() < self._poll_until and not self.life.table.running:
            self.loop.call_soon(self._poll)
        else:
            self._polling = False

    # --- housekeeping -------------------------------------------------------------------------
    def _start_housekeeping(self) -> None:
        self._housekeeping_interval = max(0.05, min(60.0, self.cfg.results.ttl / 4))
        self.loop.call_later(self._housekeeping_interval, self._housekeeping)

    def _housekeeping(self) -> None:
        self.loop.call_later(self._housekeeping_interval, self._housekeeping)
        self.jobs.expire()
        self._status()
        self.gc.maybe_collect()

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
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: re-read the config's reloadable parts (worker count, log level, schedules)."""
        if not self.cfg.config_path:
            log.info("SIGHUP: no config file to reload; handler code reloading")
            asyncio.ensure_future(self.reload_code())
            return
        try:
            fresh = config_mod.load(self.cfg.config_path, overrides=self.cfg.overrides)
        except ConfigError as e:
            log.error("SIGHUP: config not reloaded: %s", e)
            return
        except Exception as e:  # noqa: BLE001 - a reload must never take the daemon down
            log.error("SIGHUP: config not reloaded: %s: %s", type(e).__name__, e)
            return
        for key in config_mod.changed_keys(self.cfg, fresh):
            if key not in config_mod.RELOADABLE:
                log.warning("SIGHUP: config key %r changed; it is not reloaded (restart jobd "
                            "to apply it)", key)
        logging.getLogger().setLevel(fresh.log_level.upper())
        self.cfg.log_level = fresh.log_level
        self.cfg.handlers, self.cfg.app_dir = fresh.handlers, fresh.app_dir
        self.cfg.handler = fresh.handler
        self.cfg.workers.count = fresh.workers.count
        self.cfg.queues = self._keep_busy_queues(fresh.queues)
        self._size_pools()
        queues = f", queues={','.join(sorted(self.cfg.queues))}" if self.cfg.queues else ""
        applied = f"workers={fresh.workers.count}{queues}, log_level={fresh.log_level}"
        asyncio.ensure_future(self.reload_code())     # new handler code: logged when done
        try:
            self.scheduler.apply_config(fresh.schedule)
        except ConfigError as e:
            # The summary line says what was not applied: it is the one people read.
            log.error("SIGHUP: config partly reloaded (%s); schedules not reloaded, "
                      "they stay as they were: %s", applied, e)
            return
        log.info("SIGHUP: config reloaded (%s); handler code reloading", applied)

    def _keep_busy_queues(self, queues: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """A queue removed from the config that still has jobs is kept (as it
        was configured), with a log line; an empty one goes."""
        kept = dict(queues)
        for name, opts in self.cfg.queues.items():
            if name in queues:
                continue
            gate = self.life.ready.queues.get(name)
            if gate is not None and (gate.queued or gate.counts[C.RUNNING]):
                log.warning("SIGHUP: queue %r was removed from the config but still has %d "
                            "job(s); it is kept until they are done and the config is reloaded",
                            name, gate.queued + gate.counts[C.RUNNING])
                kept[name] = opts
        return kept

    def _size_pools(self, startup: bool = False) -> None:
        """Each configured queue's pool to its worker count; the pools of
        queues no longer configured to none (their workers finish and exit).
        A queue found in the WAL that is not configured still has its jobs:
        at startup it gets one worker, and a log line says so."""
        self.control.configure(self.cfg, self.control.handlers)
        wanted = {spec.name: spec.workers for spec in queue_specs(self.cfg)}
        for name, gate in self.life.ready.queues.items():
            if name not in wanted and (gate.queued or gate.counts[C.RUNNING]):
                if startup:
                    log.warning("queue %r is not configured but holds %d job(s) from the WAL; "
                                "it runs them with 1 worker (add a [queues.%s] table)",
                                name, gate.queued + gate.counts[C.RUNNING], name)
                wanted[name] = max(1, self.workers.pool(name).target)
        for name, pool in list(self.workers.pools.items()):
            if name not in wanted:
                pool.target = 0
        for name, count in wanted.items():
            self.workers.pool(name).target = count
        if not startup:
            self.arbiter.manage_workers()
            self.kick()

    # --- code reload -------------------------------------------------------------------------
    async def reload_code(self) -> dict[str, Any]:
        """New handler code without downtime: a fresh fork server imports the
        handler modules anew; if that fails the old code keeps serving and the
        reply says why. Else new workers run the new code, current ones finish
        their job and exit, and the registry is replaced (jobs of handlers no
        longer registered are held, not failed). One reload at a time: a
        second request while one runs gets the same answer."""
        if self._reloading is not None:
            return await asyncio.shield(self._reloading)
        self._reloading = asyncio.ensure_future(self._reload_code())
        try:
            return await asyncio.shield(self._reloading)
        finally:
            self._reloading = None

    async def _reload_code(self) -> dict[str, Any]:
        cfg = self.cfg
        fresh = forkserver.exec_fresh(cfg.handlers, cfg.app_dir, cfg.handler,
                                      cfg.workers.heartbeat_interval, cfg.log_level)
        report = await self._first_message(fresh)
        if "registry" not in report:
            fresh.close()
            why = report.get("error") or "the new fork server exited before importing the code"
            log.error("code reload failed, the old code keeps serving: %s", why)
            return {"reloaded": False, "handlers_added": [], "handlers_removed": [], "error": why}
        registry = handlers.from_description(report["registry"])
        old = set(self.jobs.handlers)
        self.jobs.set_handlers(registry)
        self.scheduler.handlers = registry
        self.control.configure(cfg, registry)
        self.arbiter.switch(fresh)
        added, removed = sorted(set(registry) - old), sorted(old - set(registry))
        log.info("code reloaded: %d handler(s)%s%s; workers restart as they finish their job",
                 len(registry), f", added {', '.join(added)}" if added else "",
                 f", removed {', '.join(removed)} (their jobs are held)" if removed else "")
        return {"reloaded": True, "handlers_added": added, "handlers_removed": removed,
                "error": None}

    async def _first_message(self, fs: forkserver.FreshForkServer) -> dict[str, Any]:
        """The new fork server's report: its registry, or why the import failed."""
        got: asyncio.Future[dict[str, Any]] = self.loop.create_future()

        def readable() -> None:
            msgs = fs.read_messages()
            if msgs is None or msgs:
                self.loop.remove_reader(fs.sock.fileno())
                if not got.done():
                    got.set_result(msgs[0] if msgs else {})
        self.loop.add_reader(fs.sock.fileno(), readable)
        try:
            return await asyncio.wait_for(got, RELOAD_TIMEOUT_S)
        except TimeoutError:
            self.loop.remove_reader(fs.sock.fileno())
            return {"error": f"the new code did not finish importing within {RELOAD_TIMEOUT_S:g}s"}

    async def _shutdown(self) -> None:
        if self._reloading is not None:
            await asyncio.wait([self._reloading])    # a fork server half switched helps nobody
        # Keep listening while running jobs finish: a client that connects now
        # is answered (`unavailable` for submits, the truth for the rest), not
        # left waiting in the backlog.
        self.notifier.stopping()
        self.jobs.close()
        if self.http is not None:
            self.http.close()
        await self.arbiter.shutdown(self.cfg.workers.shutdown_timeout)
        await self.results.drain()          # results still being written: record them
        self.server.stop_listening()
        self.tick()
        await self.alerts.stop()
        self.wal.close()
        self.server.close_all()
        self.arbiter.close_forkservers()
        if not self.boot.activated:
            unlink_quiet(self.cfg.server.socket)
        log.info("jobd stopped")


def _version() -> str:
    from jobd import __version__
    return __version__
