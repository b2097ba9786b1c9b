"""Flow control (issue 14): dispatch while most handlers are paused, and pausing a backlog.

`dispatch` rows: 2 workers drain N no-op jobs of one handler (N = 20,000; 2,000 with
--quick), fsync=always, a fresh daemon per run, the three variants in turn (the order
reversed every other repeat):

- `1 handler`: only those N jobs are queued;
- `100 handlers, 99 paused`: the same N jobs of `bench.h0` plus H = 1,000 (20 with --quick)
  jobs of each of 99 other handlers (bench/flow_handlers.py), submitted interleaved (per
  round one job of each of the 99, then N/H of `bench.h0`), and those 99 handlers paused
  with `pause` before the workers start: 99 × H held jobs around the N that run;
- `100 handlers, 99 with only delayed jobs`: the same jobs, the 99 handlers not paused but
  their jobs submitted with a 1 h `delay`: as many jobs in the daemon's memory, none of
  them in the way of dispatch (tells the cost of the pauses from that of a bigger table).

All are submitted with `--workers 0`; the clock runs from `scale` to the `metrics` poll
(every 10 ms) that shows N completed, as in bench/drain.py. Also the daemon's own CPU per
job (`/proc`), which moves less with the machine's phase than jobs/s, and the round trip
of `metrics` after the drain (its cost grows with the handlers that have held jobs, and
the drain's clock polls it). Afterwards the other handlers' jobs are checked to be still
held or scheduled (none ran). A run during which other processes took more than 10 % of
the machine is redone (bench.common.Undisturbed); their share in the run kept is a row.

`pause` rows: P = 1,000,000 pending no-op jobs (20,000 with --quick; `[queue] max_size`
raised), `--workers 0`, fsync=always: round trips of `pause` and `resume` of the queue
`default`, then of the jobs' handler, 5 times each (median per daemon); the WAL bytes
each `pause` adds; `metrics` and `queues` while the queue is paused. The same ops on an
empty daemon in the same repeat for comparison.

Run alone: `python -m bench.flow [--quick]`; in the suite: `python -m bench --only flow`.
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial
from typing import Any

from bench.common import (
    HANDLERS,
    NOOP,
    Conn,
    Daemon,
    Rows,
    Undisturbed,
    log,
    median,
    process_cpu_s,
    standalone,
)
from bench.drain import scale_and_wait, submit_jobs

SCENARIO = "flow"
FLOW_HANDLERS = HANDLERS + ",bench.flow_handlers"
NAMES = [f"bench.h{i}" for i in range(100)]      # as bench/flow_handlers.py registers them
RUNNING, PAUSED = NAMES[0], NAMES[1:]
CYCLES = 5


# --- dispatch with 99 of 100 handlers paused ----------------------------------------------
ALONE, DELAYED, PAUSED_99 = "alone", "delayed", "paused"


def interleaved_jobs(n: int, others_each: int, delay: float | None) -> list[dict[str, Any]]:
    """n jobs of RUNNING among others_each jobs of each other handler, mixed in rounds."""
    other = {"delay": delay} if delay else {}
    jobs: list[dict[str, Any]] = []
    per_round = n // others_each
    for _ in range(others_each):
        jobs.extend({"handler": h, **other} for h in PAUSED)
        jobs.extend([{"handler": RUNNING}] * per_round)
    return jobs


def dispatch_once(d: Daemon, n: int, others_each: int, variant: str) -> dict[str, float]:
    """Drain RUNNING's n jobs with 2 workers: jobs/s, the daemon's CPU per job, and the
    round trip of `metrics` (which the drain polls every 10 ms) afterwards."""
    others = 0 if variant == ALONE else others_each
    with d.conn() as c:
        jobs = interleaved_jobs(n, others, 3600.0 if variant == DELAYED else None) if others else \
            [{"handler": RUNNING}] * n
        submit_jobs(c, jobs)
        for name in PAUSED if variant == PAUSED_99 else ():
            c.call("pause", handler=name)
        cpu0 = process_cpu_s(d.pid)
        elapsed = scale_and_wait(c, n, 2)
        cpu = process_cpu_s(d.pid) - cpu0
        check_others(c, len(PAUSED) * others, variant)
        metrics_ms = median([timed(c, "metrics") for _ in range(20)])
    return {"jobs/s": n / elapsed, "daemon CPU µs per job": cpu / n * 1e6,
            "metrics round trip ms (after the drain)": metrics_ms}


def check_others(c: Conn, expected: int, variant: str) -> None:
    """The other handlers' jobs are still held (paused) or scheduled (delayed): none ran."""
    if variant == PAUSED_99:
        found = sum(q["held"] for q in c.call("queues")["queues"])
    else:
        found = c.call("metrics")["metrics"]["queue"]["scheduled"]
    if found != expected:
        log(f"flow: {found} jobs of the other handlers still {variant}, expected {expected}")


def variant_label(variant: str, others: int) -> str:
    if variant == PAUSED_99:
        return f"100 handlers, 99 paused ({others:,} held jobs)"
    if variant == DELAYED:
        return f"100 handlers, 99 with only delayed jobs ({others:,} scheduled 1 h ahead)"
    return "1 handler"


def dispatch_daemon(args: argparse.Namespace, n: int, others_each: int, variant: str) -> dict[str, float]:
    with Daemon(workers=0, fsync="always", handlers=FLOW_HANDLERS, root=args.data_root) as d:
        return dispatch_once(d, n, others_each, variant)


def run_dispatch(args: argparse.Namespace, rows: Rows) -> None:
    n = 2_000 if args.quick else 20_000
    others_each = 20 if args.quick else 1_000
    variants = [ALONE, DELAYED, PAUSED_99]
    seen = Undisturbed()
    for rep in range(args.repeats):
        for variant in variants if rep % 2 == 0 else variants[::-1]:
            what = variant_label(variant, len(PAUSED) * others_each)
            res = seen.run(partial(dispatch_daemon, args, n, others_each, variant), what, args.quiet_wait)
            params = f"dispatch, 2 workers, no-op job, {what}, fsync=always, N={n:,}"
            for metric, value in res.items():
                rows.add(SCENARIO, params, metric, value)
            rows.add(SCENARIO, params, "other processes' CPU % during the run", seen.shares[-1] * 100)
            log(f"flow rep {rep + 1}: {what}: {res['jobs/s']:,.0f} jobs/s, daemon CPU "
                f"{res['daemon CPU µs per job']:.1f} µs per job")


# --- pausing a large backlog ---------------------------------------------------------------
def wal_bytes(d: Daemon) -> int:
    wal = os.path.join(d.data_dir, "wal")
    return sum(os.path.getsize(os.path.join(wal, f)) for f in os.listdir(wal))


def timed(c: Conn, op: str, **args: Any) -> float:
    """One request's round trip in ms."""
    t0 = time.perf_counter()
    c.call(op, **args)
    return (time.perf_counter() - t0) * 1e3


def pause_cycles(d: Daemon, c: Conn) -> dict[str, float]:
    """Medians over CYCLES of each op's round trip (ms) and of the WAL bytes a pause adds."""
    out: dict[str, list[float]] = {}

    def add(metric: str, value: float) -> None:
        out.setdefault(metric, []).append(value)

    for _ in range(CYCLES):
        for kind, name in (("queue", "default"), ("handler", NOOP)):
            before = wal_bytes(d)
            add(f"pause {kind} round trip ms", timed(c, "pause", **{kind: name}))
            add(f"WAL bytes per pause ({kind})", wal_bytes(d) - before)
            if kind == "queue":
                add("metrics round trip ms (queue paused)", timed(c, "metrics"))
                add("queues round trip ms (queue paused)", timed(c, "queues"))
            add(f"resume {kind} round trip ms", timed(c, "resume", **{kind: name}))
        add("metrics round trip ms (not paused)", timed(c, "metrics"))
    return {metric: median(values) for metric, values in out.items()}


def pause_once(args: argparse.Namespace, pending: int, rows: Rows, rep: int) -> None:
    config = f"[queue]\nmax_size = {2 * max(pending, 1)}\n"
    with Daemon(workers=0, fsync="always", config=config, root=args.data_root,
                start_timeout=600, stop_timeout=300) as d, d.conn(timeout=600) as c:
        submit_jobs(c, [{"handler": NOOP}] * pending)
        found = c.call("metrics")["metrics"]["queue"]["pending"]
        if found != pending:
            raise RuntimeError(f"expected {pending} pending, got {found}")
        res = pause_cycles(d, c)
    params = f"pause and resume, {pending:,} pending no-op jobs, fsync=always"
    for metric, value in res.items():
        rows.add(SCENARIO, params, metric, value)
    log(f"flow rep {rep + 1}: {pending:,} pending: pause queue {res['pause queue round trip ms']:.3f} ms, "
        f"+{res['WAL bytes per pause (queue)']:.0f} WAL bytes")


def run_pause(args: argparse.Namespace, rows: Rows) -> None:
    pending = 20_000 if args.quick else 1_000_000
    for rep in range(args.repeats):
        for n in (0, pending):
            pause_once(args, n, rows, rep)


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    run_dispatch(args, rows)
    run_pause(args, rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
