"""A handler's circuit breaker and the counts behind quarantine (pure).

States: `closed` (jobs start), `open` (jobs held `breaker_open` until the
cooldown ends), `half_open` (after the cooldown: exactly one job, the best
pending one, may start: the trial; the others stay held until it ends). The
trial's success closes the breaker; its failure opens it again with the
cooldown doubled (up to `max_cooldown`).

It opens when, while closed, `failures` attempts in a row failed, or once
`min_calls` attempts ended within the last `window` seconds and at least
`rate` of them failed. Counted: failed attempts (exceptions, timeouts,
worker deaths). Not counted: `PermanentError` (and `no_retry_for`),
`RateLimited`, `Snooze`, cancels, and jobs put back by a crash or a stop of
the daemon itself. A `PermanentError` ends an attempt that reached the
service, so it counts as a call that did not fail.

Every change of state is a WAL record (jobd/core/records.py `BREAKER_*`),
applied here live and in replay; the counters are rebuilt in replay from the
attempt records, so a restart keeps an open breaker open until its cooldown
ends and keeps counting where it was.

The window is kept as `SLOTS` time buckets (calls, failures): O(1) per
attempt, a few hundred bytes per handler, exact to one bucket's width.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from jobd.core.job import iso

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
SLOTS = 12
HOUR = 3600.0


@dataclass(frozen=True)
class BreakerSpec:
    """A handler's breaker options (its `@handler`/config values over `[breaker]`)."""
    failures: int = 10            # 0: the breaker is off
    rate: float = 0.5
    window: float = 60.0
    min_calls: int = 20
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    quarantine_after: int = 3     # opens within an hour (0: never)
    quarantine_crashes: int = 3   # distinct jobs in a row that killed their worker (0: never)
    poison_after: int = 2         # kills of its worker that make a job a dead letter (0: never)

    @property
    def on(self) -> bool:
        return self.failures > 0


class Breaker:
    __slots__ = ("_spec", "per_slot", "state", "streak", "opened_at", "until", "cooldown",
                 "trial", "last_error", "trips", "slot", "at", "calls", "fails", "crash_jobs",
                 "announced")

    def __init__(self, spec: BreakerSpec) -> None:
        self.spec = spec
        self.state = CLOSED
        self.streak = 0                   # failed attempts in a row
        self.opened_at: float | None = None
        self.until = 0.0                  # open: the trial may start from then
        self.cooldown = 0.0               # the cooldown of the last opening
        self.trial: str | None = None     # half-open: the job let through
        self.last_error: str | None = None
        self.trips: deque[float] = deque()    # when it opened, within the last hour
        self.slot = 0                     # the time bucket `calls[at]` counts
        self.at = 0
        self.calls = [0] * SLOTS          # a ring of buckets of `window / SLOTS` seconds
        self.fails = [0] * SLOTS
        self.crash_jobs: set[str] = set()  # distinct jobs in a row that killed their worker
        self.announced = False            # half-open: its event was sent

    @property
    def spec(self) -> BreakerSpec:
        return self._spec

    @spec.setter
    def spec(self, spec: BreakerSpec) -> None:
        self._spec = spec
        self.per_slot = SLOTS / spec.window

    # --- attempts (applied from records, live and in replay) --------------------------------
    def advance(self, slot: int) -> None:
        """Move the ring to time bucket `slot`, emptying the buckets passed."""
        gap = slot - self.slot
        if gap <= 0:
            return                        # a clock step back: count in the current bucket
        at = self.at
        for _ in range(min(gap, SLOTS)):
            at = (at + 1) % SLOTS
            self.calls[at] = 0
            self.fails[at] = 0
        self.at = at
        self.slot = slot

    def ended(self, ts: float, failed: bool, error: str | None = None) -> None:
        """An attempt of the handler ended (counted ones only)."""
        slot = int(ts * self.per_slot)
        if slot != self.slot:
            self.advance(slot)
        self.calls[self.at] += 1
        if failed:
            self.fails[self.at] += 1
            self.streak += 1
            self.last_error = error
        else:
            self.streak = 0

    def crashed(self, job_id: str | None) -> None:
        """An attempt ended: `job_id` killed its worker, None: it did not."""
        if job_id is None:
            self.crash_jobs.clear()
        else:
            self.crash_jobs.add(job_id)

    def should_open(self) -> bool:
        """Closed, and a trigger is reached (checked after each counted failure)."""
        if self.state != CLOSED or not self.spec.on:
            return False
        if self.streak >= self.spec.failures:
            return True
        calls = sum(self.calls)
        return calls >= self.spec.min_calls and sum(self.fails) >= self.spec.rate * calls

    def failure_rate(self) -> float:
        calls = sum(self.calls)
        return round(sum(self.fails) / calls, 3) if calls else 0.0

    def next_cooldown(self) -> float:
        """The cooldown of an opening now: a trial that failed doubles the last one."""
        if self.state == HALF_OPEN and self.cooldown:
            return min(self.cooldown * 2, self.spec.max_cooldown)
        return min(self.spec.cooldown, self.spec.max_cooldown)

    # --- state changes (their records) ----------------------------------------------------------
    def open(self, ts: float, cooldown: float) -> None:
        self.state = OPEN
        self.opened_at = ts
        self.cooldown = cooldown
        self.until = ts + cooldown
        self.trial = None
        self.announced = False
        self.trips.append(ts)
        while self.trips and self.trips[0] <= ts - HOUR:
            self.trips.popleft()

    def close(self) -> None:
        self.state = CLOSED
        self.opened_at = None
        self.until = 0.0
        self.trial = None
        self.streak = 0
        self.calls = [0] * SLOTS
        self.fails = [0] * SLOTS

    def reset_trips(self) -> None:
        self.trips.clear()
        self.crash_jobs.clear()

    def trips_within_hour(self, now: float) -> int:
        return sum(1 for t in self.trips if t > now - HOUR)

    # --- what it allows ---------------------------------------------------------------------------
    def current(self, now: float) -> str:
        """The state as of `now`: an open breaker past its cooldown is half-open."""
        if self.state == OPEN and now >= self.until:
            return HALF_OPEN
        return self.state

    def holds(self, now: float) -> bool:
        """No job of the handler may start at `now`."""
        state = self.state
        if state == CLOSED:
            return False
        if state == OPEN and now < self.until:
            return True
        return self.trial is not None         # half-open: one trial at a time

    def started(self, job_id: str, now: float) -> None:
        """A job of the handler started: past the cooldown it is the trial."""
        if self.state == OPEN and now >= self.until:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN and self.trial is None:
            self.trial = job_id

    def view(self, now: float) -> dict[str, object]:
        state = self.current(now)
        return {"state": state, "failures": self.streak, "opened_at": iso(self.opened_at),
                "next_trial_at": iso(self.until) if state == OPEN else None,
                "cooldown": self.cooldown or self.spec.cooldown,
                "failure_rate": self.failure_rate(), "trips_last_hour": self.trips_within_hour(now)}
