"""Retry policy: how long to wait before the next attempt (SPEC §4)."""
from __future__ import annotations

import random

from jobd import constants as C


def backoff(failed: int, delay: float, factor: float, max_delay: float,
            jitter: bool, rng: random.Random | None = None) -> float:
    """Delay before attempt `failed + 1`, after `failed` failed attempts.

    `min(delay * factor**(failed-1), max_delay)`; with jitter, a uniform
    fraction in [0.5, 1.0] of that, so retries of many jobs that failed
    together spread out instead of arriving as a herd.
    """
    n = max(1, failed)
    try:
        value = min(delay * factor ** (n - 1), max_delay)
    except OverflowError:
        value = max_delay
    if jitter:
        value *= (rng or random).uniform(0.5, 1.0)
    return value


def should_retry(attempts: int, max_retries: int) -> bool:
    """`max_retries` counts retries after the first attempt."""
    return attempts <= max_retries


# Outcome kinds of a failed attempt (the worker's FAIL frame says which).
FAIL_ERROR = 0          # an ordinary exception: the retry policy decides
FAIL_PERMANENT = 1      # PermanentError: no retry
FAIL_RETRY = 2          # Retry(after=...): retry after exactly that delay


def next_step(attempts: int, max_retries: int, kind: int, after: float,
              cancel_requested: bool, delay: float, factor: float, max_delay: float,
              jitter: bool, rng: random.Random | None = None) -> tuple[str, float | None]:
    """What a failed attempt leads to: (next status, retry delay or None)."""
    if kind == FAIL_PERMANENT:
        return C.FAILED, None
    if attempts > max_retries:
        return C.DEAD_LETTER, None
    if cancel_requested:
        return C.CANCELLED, None
    if kind == FAIL_RETRY:
        return C.RETRYING, max(0.0, after)
    return C.RETRYING, backoff(attempts, delay, factor, max_delay, jitter, rng)
