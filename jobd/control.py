"""Flow control as operators steer it: queues, pause and resume, and the
views of queues and handlers (docs/flow-control.md).

Which pending job may start is decided by the flow structure
(jobd/core/flow.py `Ready`), which lives beside the jobs in the store; this
service configures it from `[queues."NAME"]` and the handlers' options,
records pauses and resumes in the WAL (one record each, however many jobs
they hold), resumes a pause with a `for` when its time comes, and answers
what is held and why.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

from jobd import constants as C
from jobd.config import BreakerConfig, Config
from jobd.core import records as R
from jobd.core.breaker import CLOSED, HALF_OPEN, OPEN, BreakerSpec
from jobd.core.flow import HandlerFlow, Pause, QueueGate, QueueSpec, Ready
from jobd.core.job import Job, iso
from jobd.errors import OpError
from jobd.handlers import HandlerSpec
from jobd.scheduling.timers import EarliestTimer
from jobd.storage.store import Store

log = logging.getLogger("jobd.flow")


def _first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0][:500] if text and text.strip() else text

QUEUE = "queue"
HANDLER = "handler"


class Events(Protocol):
    def publish(self, name: str, job_id: str | None, data: dict[str, Any]) -> None: ...


class TakeBack(Protocol):
    def take_back_held(self) -> None: ...


def queue_specs(cfg: Config) -> list[QueueSpec]:
    """Every configured queue; `default` always, its pool `[workers] count`."""
    specs = [_spec(C.DEFAULT_QUEUE, cfg.queues.get(C.DEFAULT_QUEUE, {}), cfg.workers.count)]
    for name, opts in cfg.queues.items():
        if name != C.DEFAULT_QUEUE:
            specs.append(_spec(name, opts, opts.get("workers", 1)))
    return specs


def _spec(name: str, opts: dict[str, Any], workers: int) -> QueueSpec:
    return QueueSpec(name, workers, opts.get("max_size", 0), opts.get("rate"),
                     opts.get("burst"), bool(opts.get("paused", False)))


def handler_flows(handlers: dict[str, HandlerSpec], overrides: dict[str, dict[str, Any]],
                  defaults: BreakerConfig | None = None) -> dict[str, HandlerFlow]:
    """Each handler's queue, rate limit, concurrency limit and breaker:
    `[handler."NAME"]` over its `@handler` options over `[breaker]`."""
    base = dataclasses.asdict(defaults or BreakerConfig())
    out = {}
    for name, spec in handlers.items():
        merged = {**spec.options, **overrides.get(name, {})}
        b = {key: merged.get(key, base[key]) for key in base}
        breaker = BreakerSpec(
            int(b["breaker_failures"]), float(b["breaker_rate"]), float(b["breaker_window"]),
            int(b["breaker_min_calls"]), float(b["breaker_cooldown"]),
            float(b["breaker_max_cooldown"]), int(b["quarantine_after"]),
            int(b["quarantine_crashes"]), int(b["poison_after"]))
        out[name] = HandlerFlow(merged.get("queue") or C.DEFAULT_QUEUE, merged.get("rate"),
                                merged.get("burst"), int(merged.get("max_concurrency") or 0),
                                breaker)
    return out


class Control:
    def __init__(self, *, cfg: Config, store: Store, handlers: dict[str, HandlerSpec],
                 take_back: TakeBack, events: Events, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float], wake: Callable[[], None]) -> None:
        self.cfg = cfg
        self.store = store
        self.ready: Ready = store.ready
        self.handlers = handlers
        self.take_back = take_back
        self.events = events
        self.loop = loop
        self.clock = clock
        self.wake = wake
        self.timer = EarliestTimer(loop, clock, self._fire)
        self.pool_size: Callable[[str], int] = lambda queue: 0    # the daemon's pools
        self.trips: dict[str, int] = {}      # breaker openings since the start, per handler

    def configure(self, cfg: Config, handlers: dict[str, HandlerSpec]) -> None:
        """Queues and handlers as configured now (startup, SIGHUP, code reload)."""
        self.cfg = cfg
        self.handlers = handlers
        self.ready.configure(queue_specs(cfg), handler_flows(handlers, cfg.handler, cfg.breaker),
                             self.clock())
        self.wake()

    def queue_of(self, handler: str) -> str:
        gate = self.ready.handlers.get(handler)
        return gate.queue if gate is not None else C.DEFAULT_QUEUE

    # --- pause and resume -----------------------------------------------------------------
    def pause(self, kind: str, name: str, for_s: float | None, reason: str | None,
              uid: int | None) -> tuple[dict[str, Any], int]:
        self._check_exists(kind, name)
        now = self.clock()
        until = now + for_s if for_s is not None else None
        since = now
        current = self._pause_of(kind, name)
        if current is not None:
            since = current.since           # already paused: update until and reason
        seq = self.store.commit(R.pause(kind, name, since, until, reason, uid))
        pause = self._pause_of(kind, name)
        assert pause is not None
        view = pause.view(kind, name)
        log.info("%s %s paused%s%s", kind, name, f" until {iso(until)}" if until else "",
                 f": {reason}" if reason else "")
        self.events.publish(f"{kind}.paused", None, dict(view))
        self.take_back.take_back_held()     # jobs of it sent ahead do not start
        self.arm()
        return view, seq

    def resume(self, kind: str, name: str) -> tuple[bool, int]:
        """Lift a pause (a queue paused in its config too: the resume is
        recorded, and wins over the config from then on); False if it was
        not paused (nothing is recorded)."""
        self._check_exists(kind, name)
        if self._pause_of(kind, name) is None:
            return False, 0
        seq = self.store.commit(R.resume(kind, name, self.clock()))
        log.info("%s %s resumed", kind, name)
        self.events.publish(f"{kind}.resumed", None, {kind: name})
        self.wake()
        return True, seq

    def _pause_of(self, kind: str, name: str) -> Pause | None:
        if kind == QUEUE:
            q = self.ready.queues.get(name)
            return q.pause if q is not None else None
        gate = self.ready.handlers.get(name)
        return gate.pause if gate is not None else None

    def _check_exists(self, kind: str, name: str) -> None:
        if kind == QUEUE and name not in self.ready.queues:
            raise OpError(C.E_NOT_FOUND, f"no queue named {name!r}")
        if kind == HANDLER and name not in self.handlers:
            raise OpError(C.E_NOT_FOUND, f"no handler registered as {name!r}")

    # --- breakers and quarantine (jobd/jobs.py Guard) ----------------------------------------
    def attempt_done(self, job: Job, was_trial: bool, failed: bool | None,
                     crashed: bool) -> None:
        """After an attempt's record: open or close the handler's breaker, or
        quarantine the handler, as its counts say (each change a record)."""
        gate = self.ready.handler(job.handler)
        b = gate.breaker
        now = self.clock()
        if was_trial and failed is False:
            self._close(job.handler, "its trial job succeeded")
        elif failed and (was_trial or b.should_open()):
            self._open(job.handler, now)
        spec = b.spec
        if crashed and spec.quarantine_crashes and gate.quarantine is None \
                and len(b.crash_jobs) >= spec.quarantine_crashes:
            self.quarantine(job.handler, f"{len(b.crash_jobs)} jobs in a row killed their "
                                         f"worker (last: {job.id})", None)

    def _open(self, handler: str, now: float) -> None:
        gate = self.ready.handler(handler)
        b = gate.breaker
        cooldown = b.next_cooldown()
        failures, rate, error = b.streak, b.failure_rate(), b.last_error
        self.store.commit([R.BREAKER_OPEN, handler, now, cooldown, failures, rate,
                           _first_line(error)])
        log.warning("handler %s: circuit breaker opened (%d failures in a row, failure rate "
                    "%.0f%%); its jobs are held for %gs", handler, failures, rate * 100, cooldown)
        self.trips[handler] = self.trips.get(handler, 0) + 1
        self.events.publish(C.EV_BREAKER_OPENED, None, {
            "handler": handler, "failures": failures, "rate": rate, "cooldown": cooldown,
            "last_error": _first_line(error)})
        self.take_back.take_back_held()
        spec = b.spec
        trips = b.trips_within_hour(now)
        if spec.quarantine_after and gate.quarantine is None and trips >= spec.quarantine_after:
            self.quarantine(handler, f"its circuit breaker opened {trips} times within an hour",
                            None)
        self.arm()

    def _close(self, handler: str, why: str) -> int:
        seq = self.store.commit([R.BREAKER_CLOSE, handler, self.clock(), why])
        log.info("handler %s: circuit breaker closed (%s)", handler, why)
        self.events.publish(C.EV_BREAKER_CLOSED, None, {"handler": handler})
        self.wake()
        return seq

    def breaker_reset(self, handler: str) -> tuple[bool, int]:
        """Close the handler's breaker (an operator's call); False if it was closed."""
        self._check_exists(HANDLER, handler)
        if self.ready.handler(handler).breaker.state == CLOSED:
            return False, 0
        return True, self._close(handler, "breaker_reset")

    def quarantine(self, handler: str, reason: str | None,
                   uid: int | None) -> tuple[dict[str, Any], int]:
        """Hold every job of the handler until an operator releases it."""
        now = self.clock()
        gate = self.ready.handler(handler)
        seq = 0
        if gate.quarantine is None:
            why = reason or "quarantined by an operator"
            seq = self.store.commit([R.QUARANTINE, handler, now, why, uid])
            log.error("handler %s quarantined: %s; its jobs are held until `jobd-cli handlers "
                      "release %s`", handler, why, handler)
            self.events.publish(C.EV_QUARANTINED, None, {"handler": handler, "reason": why})
            self.take_back.take_back_held()
        assert gate.quarantine is not None
        return {"reason": gate.quarantine[0], "since": iso(gate.quarantine[1])}, seq

    def release(self, handler: str) -> tuple[bool, int]:
        self._check_exists(HANDLER, handler)
        gate = self.ready.handler(handler)
        if gate.quarantine is None and gate.breaker.state == CLOSED and not gate.breaker.trips:
            return False, 0
        was = gate.quarantine is not None
        seq = self.store.commit([R.RELEASE, handler, self.clock()])
        log.info("handler %s released", handler)
        if was:
            self.events.publish(C.EV_RELEASED, None, {"handler": handler})
        self.wake()
        return was, seq

    def handler_state(self, name: str) -> str:
        gate = self.ready.handler(name)
        if not gate.known or gate.quarantine is not None:
            return "quarantined"
        if gate.pause is not None:
            return "paused"
        state = gate.breaker.current(self.clock())
        if state == OPEN:
            return "breaker_open"
        if state == HALF_OPEN:
            return "half_open"
        return "ok"

    # --- the timer: pauses with `for`, and holds that end by themselves -------------------
    def arm(self) -> None:
        """One loop timer for the earliest of: a pause's end, a rate hold's end."""
        due = self.ready.next_wakeup()
        for _kind, _name, pause in self.ready.pauses():
            if pause.until is not None and (due is None or pause.until < due):
                due = pause.until
        self.timer.arm(due)

    def _fire(self) -> None:
        now = self.clock()
        for kind, name, pause in list(self.ready.pauses()):
            if pause.until is not None and pause.until <= now:
                self.store.commit(R.resume(kind, name, now))
                log.info("%s %s resumed: its pause ended", kind, name)
                self.events.publish(f"{kind}.resumed", None, {kind: name})
        self.ready.release_due(now)
        for name, gate in self.ready.handlers.items():
            b = gate.breaker
            if b.state == OPEN and now >= b.until and not b.announced:
                b.announced = True
                log.info("handler %s: circuit breaker half-open: one trial job may start", name)
                self.events.publish(C.EV_BREAKER_HALF_OPEN, None, {"handler": name})
        self.wake()
        self.arm()

    def cancel(self) -> None:
        self.timer.cancel()

    # --- views ------------------------------------------------------------------------------
    def held(self, job: Job) -> dict[str, Any] | None:
        if job.status != C.PENDING:
            return None
        hold = self.ready.hold_of(job, self.clock())
        return hold.view() if hold is not None else None

    def queue_views(self) -> list[dict[str, Any]]:
        return [self.queue_view(q, self.pool_size(name))
                for name, q in sorted(self.ready.queues.items())]

    # --- metrics (jobd/runtime/metrics.py FlowStats) ------------------------------------------
    @property
    def holds(self) -> int:
        return self.ready.holds

    def held_counts(self) -> list[tuple[str, str, str, int]]:
        return list(self.ready.held_counts(self.clock()))

    def queue_summaries(self) -> dict[str, dict[str, Any]]:
        out = {}
        for view in self.queue_views():
            out[view["name"]] = {"paused": view["paused"] is not None, "workers": view["workers"],
                                 "rate": view["rate"], "pending": view[C.PENDING],
                                 "running": view[C.RUNNING], "held": view["held"]}
        return out

    def handler_states(self) -> dict[str, str]:
        return {name: self.handler_state(name) for name in self.handlers}

    def running_by_handler(self) -> dict[str, int]:
        return {name: gate.running for name, gate in self.ready.handlers.items()}

    def handler_summaries(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in sorted(self.handlers):
            f = self.handler_fields(name)
            out[name] = {"queue": f["queue"], "state": f["state"], "pending": f["pending"],
                         "running": f["running"], "held": f["held"]}
        return out

    def queue_view(self, q: QueueGate, workers: int) -> dict[str, Any]:
        now = self.clock()
        held = sum(lane.pending for lane in q.lanes.values()
                   if lane.pending and self.ready.lane_hold(lane, now) is not None)
        lim = q.limiter
        return {"name": q.name, "workers": workers,
                "paused": q.pause.view(QUEUE, q.name) if q.pause is not None else None,
                "rate": lim.text if lim is not None else None,
                "burst": lim.burst if lim is not None else None,
                "max_size": q.max_size or None, "counts": dict(q.counts), **q.counts,
                "held": held}

    def handler_fields(self, name: str) -> dict[str, Any]:
        """The flow part of a handler's row in the `handlers` view."""
        gate = self.ready.handler(name)
        now = self.clock()
        held = 0
        pending = 0
        for lane in gate.lanes:
            pending += lane.pending
            if lane.pending and self.ready.lane_hold(lane, now) is not None:
                held += lane.pending
        lim = gate.limiter
        q = gate.quarantine
        return {"queue": gate.queue, "state": self.handler_state(name),
                "paused": gate.pause.view(HANDLER, name) if gate.pause is not None else None,
                "breaker": gate.breaker.view(now),
                "quarantine": {"reason": q[0], "since": iso(q[1])} if q is not None else None,
                "rate": lim.text if lim is not None else None,
                "burst": lim.burst if lim is not None else None,
                "pending": pending, "running": gate.running, "held": held}
