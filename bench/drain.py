"""Drain throughput (issue 3; target in issue 5): N pre-submitted jobs run by W workers.

The jobs are submitted with `--workers 0` (submit_many, batches of 200), then `scale` to W;
the clock runs from the `scale` request to the first `metrics` poll (every 10 ms) that shows
every job completed. W = 1, 2, 4 with the no-op handler, and W = 2 with the reference job of
issue 5 (append one byte to a file). fsync=always (the default). A fresh daemon per run.

`limited` rows: the no-op handler with `max_concurrency = 2` and 2 workers, backlog
N = 100,000 (20,000 with --quick), beside the same run without a limit: the limit's cost
per job must not grow with the backlog it holds back.
They are the scenario `drain_limited` (`python -m bench --only drain_limited`).
Run alone: `python -m bench.drain [--quick]`.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any

import orjson

from bench.common import NOOP, TOUCH, Conn, Daemon, Rows, log, process_cpu_s, standalone

SCENARIO = "drain"
BATCH = 200


def submit_jobs(c: Conn, jobs: list[dict[str, Any]], batch: int = BATCH) -> None:
    """Pipelined submit_many batches (all sent, then all replies read)."""
    reqs = [orjson.dumps({"op": "submit_many", "id": i, "jobs": jobs[off:off + batch]}) + b"\n"
            for i, off in enumerate(range(0, len(jobs), batch))]
    # keep a bounded window so neither side's buffers grow without bound
    window, sent, done = 20, 0, 0
    while done < len(reqs):
        while sent < len(reqs) and sent - done < window:
            c.send(reqs[sent])
            sent += 1
        for r in c.read_lines():
            if b'"ok":true' not in r:
                raise RuntimeError(f"submit_many failed: {r[:300]!r}")
            done += 1


def drain_once(d: Daemon, n: int, workers: int, handler: str, args: list[Any]) -> float:
    return drain_timed(d, n, workers, handler, args)[0]


def drain_timed(d: Daemon, n: int, workers: int, handler: str, args: list[Any]) -> tuple[float, float]:
    """Submit n jobs, then drain them: (seconds, the daemon's own CPU seconds) from `scale`."""
    with d.conn() as c:
        submit_jobs(c, [{"handler": handler, "args": args}] * n)
        q = c.call("metrics")["metrics"]["queue"]
        if q["pending"] != n:
            raise RuntimeError(f"expected {n} pending, got {q}")
        cpu0 = process_cpu_s(d.pid)
        elapsed = scale_and_wait(c, n, workers)
        return elapsed, process_cpu_s(d.pid) - cpu0


def scale_and_wait(c: Conn, n: int, workers: int) -> float:
    """`scale` to `workers`, then poll `metrics` every 10 ms until n jobs are finished;
    seconds from the `scale` request to that poll."""
    t0 = time.perf_counter()
    c.call("scale", count=workers)
    while True:
        q = c.call("metrics")["metrics"]["queue"]
        done = q["completed"] + q["failed"] + q["dead_letter"] + q["cancelled"]
        if done >= n:
            elapsed = time.perf_counter() - t0
            break
        if time.perf_counter() - t0 > 600:
            raise RuntimeError(f"drain did not finish in 600 s: {q}")
        time.sleep(0.01)
    if q["completed"] != n:
        log(f"drain: {q['completed']} jobs completed, expected {n}: {q}")
    return elapsed


LIMIT_CONFIG = f'[handler."{NOOP}"]\nmax_concurrency = 2\n'


def run_limited(args: argparse.Namespace) -> Rows:
    """A limited handler's backlog against the same backlog without a limit."""
    rows = Rows()
    n = 20_000 if args.quick else 100_000
    for rep in range(args.repeats):
        for limited in (False, True):
            with Daemon(workers=0, fsync="always", root=args.data_root,
                        config=LIMIT_CONFIG if limited else "") as d:
                elapsed = drain_once(d, n, 2, NOOP, [])
            what = "max_concurrency=2" if limited else "no limit"
            params = f"2 workers, no-op job, {what}, backlog N={n:,}"
            rows.add(SCENARIO, params, "jobs/s", n / elapsed)
            log(f"drain rep {rep + 1}: {params}: {n / elapsed:,.0f} jobs/s")
    return rows


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    n = 5_000 if args.quick else 20_000
    cases = [(1, NOOP), (2, NOOP), (4, NOOP), (2, TOUCH)]
    for rep in range(args.repeats):
        for workers, handler in cases:
            with Daemon(workers=0, fsync="always", root=args.data_root) as d:
                target = os.path.join(d.root, "touched")
                hargs = [target] if handler == TOUCH else []
                elapsed = drain_once(d, n, workers, handler, hargs)
                if handler == TOUCH and os.path.getsize(target) != n:
                    log(f"drain: touch file has {os.path.getsize(target)} bytes, expected {n}")
            name = "no-op" if handler == NOOP else "append 1 byte"
            params = f"{workers} worker{'s' if workers > 1 else ''}, {name} job, fsync=always, N={n:,}"
            rows.add(SCENARIO, params, "jobs/s", n / elapsed)
            log(f"drain rep {rep + 1}: {params}: {n / elapsed:,.0f} jobs/s")
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
