"""A schedule's runs by time: the job id of the run due at a time, and the
times it was due lately (pure). The scheduler names each run's job with
`fire_job_id`, so anyone who knows a schedule's name and expression (such as
`jobd web`, through the client) can find its recent runs without the daemon
keeping a history: the job ids of the last fire times, looked up with `list`.
"""
from __future__ import annotations

import hashlib
import re
import time

from jobd import constants as C
from jobd.scheduling.cron import Cron

_ID_SAFE = re.compile(r"^[A-Za-z0-9._:@/+-]{1,105}$")

# How far back `past_fires` looks, widening until it has enough (a per-second
# expression fills the first; a monthly one needs the last).
HORIZONS = (600.0, 3600.0, 86400.0, 7 * 86400.0, 62 * 86400.0)
MAX_STEPS = 20_000          # fire times computed at most, whatever the expression


def fire_job_id(name: str, due: float) -> str:
    """The job id of the run due at `due`: the same for the same (schedule, time)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(due))
    if _ID_SAFE.match(name):
        return f"{C.SCHEDULE_JOB_PREFIX}{name}:{stamp}"
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"{C.SCHEDULE_HASHED_PREFIX}{digest}:{stamp}"


def past_fires(cron: Cron, now: float, n: int) -> list[float]:
    """The last `n` fire times at or before `now`, oldest first (fewer when the
    expression fired fewer times in the widest horizon)."""
    found: list[float] = []
    steps = 0
    for horizon in HORIZONS:
        found = []
        t = cron.next_fire(now - horizon - 1)
        while t <= now and steps < MAX_STEPS:
            found.append(t)
            steps += 1
            t = cron.next_fire(t)
        if len(found) >= n or steps >= MAX_STEPS:
            break
    return found[-n:]
