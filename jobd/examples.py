"""Example handlers bundled with jobd (used by `jobd demo` and the Quick start).

Run them with `jobd serve --handlers jobd.examples`.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from jobd import PermanentError, current_job, handler


@handler
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Returns its arguments."""
    return {"args": list(args), "kwargs": kwargs}


@handler
def add(a: float, b: float) -> float:
    return a + b


@handler
def noop() -> None:
    """Does nothing; used by the benchmarks."""


@handler(name="sleep")
def sleep(seconds: float = 1.0) -> float:
    time.sleep(seconds)
    return seconds


@handler
def count_words(text: str) -> dict[str, int]:
    """A tiny CPU job that reports progress."""
    job = current_job()
    words = text.split()
    counts: dict[str, int] = {}
    for i, word in enumerate(words, 1):
        counts[word.lower()] = counts.get(word.lower(), 0) + 1
        job.progress(i, total=len(words), message="counting")
    return counts


@handler
async def fetch_later(value: Any, delay: float = 0.1) -> Any:
    """An async handler: waits, then returns its value."""
    await asyncio.sleep(delay)
    return value


@handler(max_retries=0)
def reject(reason: str = "rejected") -> None:
    raise PermanentError(reason)
