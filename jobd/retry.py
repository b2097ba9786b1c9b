"""Retry policy: how long to wait before the next attempt (SPEC §4)."""
from __future__ import annotations

import random


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
