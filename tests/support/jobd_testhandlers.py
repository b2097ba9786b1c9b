"""Handlers the integration tests run inside real jobd workers.

Handlers that must leave a trace outside the worker write to files whose
paths the test passes in, so tests observe them without sleeps.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from jobd import PermanentError, RateLimited, Retry, Snooze, current_job, handler


@handler
def add(a: float, b: float) -> float:
    return a + b


@handler
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@handler
def noop() -> None:
    return None


@handler
async def async_add(a: float, b: float, delay: float = 0.01) -> float:
    await asyncio.sleep(delay)
    return a + b


@handler
def append(path: str, value: Any) -> Any:
    """Append `value` and the attempt number to a file (execution order, retries)."""
    with open(path, "a") as f:
        f.write(f"{value} {current_job().attempt} {time.time()}\n")
    return value


@handler
def fail_times(path: str, times: int) -> str:
    """Fail the first `times` attempts, logging each attempt's time to `path`."""
    job = current_job()
    with open(path, "a") as f:
        f.write(f"{job.attempt} {time.time()}\n")
    if job.attempt <= times:
        raise ValueError(f"planned failure {job.attempt}")
    return f"ok after {job.attempt}"


@handler
def always_fail(message: str = "boom") -> None:
    raise RuntimeError(message)


@handler
def permanent(message: str = "no retry") -> None:
    raise PermanentError(message)


@handler
def retry_after(path: str, after: float, times: int = 1) -> str:
    job = current_job()
    with open(path, "a") as f:
        f.write(f"{job.attempt} {time.time()}\n")
    if job.attempt <= times:
        raise Retry(after=after)
    return "done"


@handler
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@handler
def block(path: str | None = None) -> None:
    """Signal that it started (by creating `path`), then sleep forever."""
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
    while True:
        time.sleep(3600)


@handler
def exit_hard(code: int = 3) -> None:
    os._exit(code)


@handler
def kill_self(sig: int = signal.SIGKILL) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(60)


@handler
def stop_self(path: str | None = None) -> None:
    """Freeze the whole worker (heartbeat thread included) with SIGSTOP."""
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGSTOP)


@handler
def hog_gil(seconds: float) -> None:
    """Hold the GIL in C code: the heartbeat thread cannot run."""
    import re
    # Catastrophic backtracking runs inside the regex engine without releasing the GIL.
    n = 26 if seconds < 5 else 30
    re.match(r"(a+)+$", "a" * n + "b")


@handler
def progress_flood(n: int) -> int:
    job = current_job()
    for i in range(n):
        job.progress(i + 1, total=n, message="flood")
    return n


@handler
def progress_steps(path: str, steps: int) -> int:
    """Report progress, then wait for the test to create `path` before finishing."""
    job = current_job()
    job.progress(1, total=steps, message="started")
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.01)
    job.progress(steps, total=steps, message="done")
    return steps


@handler
def cooperative(path: str) -> str:
    """Run until cancel is requested; write 'started' to `path` first."""
    with open(path, "a") as f:
        f.write("started\n")
    job = current_job()
    deadline = time.time() + 30
    while time.time() < deadline:
        if job.cancel_requested:
            return "stopped on request"
        time.sleep(0.01)
    return "deadline"


@handler
def bad_result() -> Any:
    return object()


@handler
def big_result(size: int) -> str:
    return "x" * size


@handler
def pid() -> int:
    return os.getpid()


@handler(name="custom_name", max_retries=0, timeout=30, priority="high")
def custom(x: Any = None) -> Any:
    return x


@handler
def context() -> dict[str, Any]:
    job = current_job()
    return {"id": job.id, "attempt": job.attempt, "handler": job.handler, "tags": job.tags}


@handler
def block_once(path: str) -> int:
    """First attempt: write the pid to `path` and hang; later attempts return the attempt."""
    job = current_job()
    if job.attempt == 1:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        while True:
            time.sleep(3600)
    return job.attempt


@handler
def fail_while_exists(path: str) -> str:
    """Fail every attempt while `path` exists (dead letter, then `retry` after removing it)."""
    if os.path.exists(path):
        raise RuntimeError(f"{path} still exists")
    return "recovered"


@handler
def wait_file(path: str, started: str | None = None) -> str:
    """Optionally mark `started`, then wait (up to 30 s) for the test to create `path`."""
    if started:
        with open(started, "a") as f:
            f.write(f"{os.getpid()}\n")
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.01)
    return "released" if os.path.exists(path) else "deadline"


@handler
def wait_file_then(path: str, started: str, result: Any) -> Any:
    """`wait_file`, then return `result` (e.g. a large one)."""
    wait_file(path, started)
    return result


@handler
def wait_file_then_big(path: str, started: str, size: int) -> str:
    """`wait_file`, then return a string of `size` bytes (a result stored as a file)."""
    wait_file(path, started)
    return "x" * size


@handler
def float_result(text: str, nested: bool = False) -> Any:
    """Return float(text) (e.g. "nan", "inf"), bare or nested inside a structure."""
    value = float(text)
    return {"a": [1, value]} if nested else value


@handler
def progress_float(current: str, total: str | None = None) -> str:
    """Report progress with float(current) / float(total) (e.g. "nan")."""
    current_job().progress(float(current), None if total is None else float(total))
    return "reported"


@handler(no_retry_for=(ValueError,))
def picky(kind: str) -> None:
    """Raise ValueError (no retry: ends failed at once) or RuntimeError (retried)."""
    raise ValueError("bad input") if kind == "value" else RuntimeError("flaky")


@handler
def greet(to: str, subject: str, *, loud: bool = False) -> str:
    return f"{subject} to {to}" + ("!" if loud else "")


@handler
def chatty(tag: str, lines: int = 3) -> str:
    """Print and log lines that carry `tag` (per-job output capture)."""
    import logging
    import sys
    for i in range(lines):
        print(f"{tag} out {i}")
        print(f"{tag} err {i}", file=sys.stderr)
        logging.getLogger("chatty").warning("%s log %d", tag, i)
    return tag


@handler
def print_then_die(tag: str) -> None:
    """Print a line, then kill the worker: the line must be kept."""
    print(f"{tag} before the crash")
    os._exit(7)


@handler
def flood(size: int) -> int:
    """Print `size` bytes of output: numbered 100-byte lines."""
    for i in range(size // 100):
        print(f"{i:09d}" + "." * 90)
    return size


@handler
def rate_limited_once(path: str, after: float) -> int:
    """The service it calls says 429 the first time: RateLimited(after)."""
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(str(time.time()))
        raise RateLimited(after=after)
    return current_job().attempt


@handler
def snooze_once(path: str, after: float) -> int:
    """Not ready yet the first time: Snooze(after)."""
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(str(time.time()))
        raise Snooze(after=after)
    return current_job().attempt


def _gated(path: str) -> str:
    """Run until the test creates `path` (a job the test finishes when it chooses)."""
    deadline = time.time() + 120
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.005)
    return "released"


# Three handlers with the same body (the flow-control model test holds them apart).
gated_a = handler(name="gated_a")(_gated)
gated_b = handler(name="gated_b")(_gated)
gated_c = handler(name="gated_c")(_gated)


@handler
def flaky_even(i: int) -> int:
    """A service that fails every other call: never many failures in a row."""
    if i % 2 == 0:
        raise RuntimeError(f"call {i} failed")
    return i


@handler(max_retries=0, breaker_failures=0)
def fail_with(kind: str, n: int = 0) -> None:
    """Fail at once (no retry, no breaker) with an error whose details vary with
    `n`: a number, an address, a path, an id. Failure groups collapse them by `kind`."""
    if kind == "conn":
        raise ConnectionError(f"connect to 10.0.{n % 250}.7:{5000 + n} failed for order {n}")
    if kind == "file":
        raise FileNotFoundError(f"no such file: /var/data/{n}/input_{n}.csv")
    if kind == "permanent":
        raise PermanentError(f"account {n} is closed (user{n}@example.com)")
    raise ValueError(f"bad value {n} for job {n:032x}")
