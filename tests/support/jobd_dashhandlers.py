"""Handlers the dashboard's browser tests run (tests/test_web_browser.py).

The test decides when each step happens: a handler waits for files the test
creates, so the browser can be checked at every intermediate state without
sleeps.
"""
from __future__ import annotations

import os
import time

from jobd import current_job, handler

WAIT_S = 60
PACE_S = 0.06       # the worker sends at most one progress frame per job every 50 ms and
                    # keeps a newer one back until the next report: space them out


def _wait_for(path: str) -> bool:
    deadline = time.time() + WAIT_S
    while not os.path.exists(path):
        if time.time() > deadline:
            return False
        time.sleep(0.01)
    return True


@handler(queue="default")
def stepped(gate: str, steps: int) -> int:
    """Report step i of `steps` once the test has created `<gate>.<i>`."""
    job = current_job()
    job.progress(0, total=steps, message="waiting for step 1")
    last = time.monotonic()
    for i in range(1, steps + 1):
        if not _wait_for(f"{gate}.{i}"):
            raise TimeoutError(f"step {i} never came")
        time.sleep(max(0.0, last + PACE_S - time.monotonic()))
        job.progress(i, total=steps, message=f"step {i} of {steps}")
        last = time.monotonic()
    return steps


@handler(max_retries=0)
def upstream_down(gate: str, host: int) -> str:
    """Fail while `gate` does not exist, with a message that differs only in a
    number (one failure group once normalised); succeed once it does."""
    if not os.path.exists(gate):
        raise ConnectionError(f"upstream 10.0.0.{host}:5432 refused the connection")
    return "reached"


@handler(max_retries=0)
def bad_input(value: str) -> None:
    """Always fails, with another error type (a second failure group)."""
    raise ValueError(f"cannot parse {value!r}")
