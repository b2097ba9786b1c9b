"""Failure groups: `failure_groups` with a million dead letters in the daemon.

N dead letters (N = 1,000,000; 50,000 with --quick) are written as a synthetic WAL
(`write_dead_letters`: one segment of chunked job records, as a snapshot holds them),
which the daemon replays at startup (`--workers 0`, fsync=always, `[dead_letter]
max_size` raised above N). Their errors come from G = 20 failures, each with numbers,
ids, paths and addresses that differ from job to job, so the normaliser must collapse
N distinct messages into G groups. Creating them live costs a failing attempt each
(~10 k/s on two cores); the replay builds the same state.

Rows: the daemon's replay time (it only notes the dead letters: they are grouped once it
serves, jobd/runtime/classify.py) and how long the first `failure_groups`, sent as soon as
the daemon answers `hello`, waits for that grouping; then the round trip of
`failure_groups` (median of 50, default limit 100, then with `handler` set), of `hello`
on the same connection for scale, and the daemon's RSS per dead letter; and the replay
time of the same N jobs as completed (no failure to group) in a second daemon.

Run alone: `python -m bench.failures [--quick]`; in the suite: `python -m bench --only failures`.
"""
from __future__ import annotations

import argparse
import os
import re
import time
from typing import Any

from bench.common import NOOP, Conn, Daemon, Rows, log, median, standalone

SCENARIO = "failures"
GROUPS = 20
CALLS = 50
CHUNK = 1_000                   # job records per WAL record, as snapshots write them
RECOVERED = re.compile(r"recovered (\d+) jobs from (\d+) WAL records in ([\d.]+)s")


def failure(i: int) -> str:
    """Job i's error: one of GROUPS failures, its details different for every job."""
    g = i % GROUPS
    return (f"ConnectionError{g}: connect to 10.{i % 250}.{i % 7}.{g}:{5000 + i % 999} failed "
            f"for order {i} (job {i:032x}) writing /var/spool/out/{i}/part-{g}.csv\n"
            f"Traceback (most recent call last):\n  ...\nConnectionError{g}: ...\n")


def write_dead_letters(data_dir: str, n: int, handler: str, error: Any = failure,
                       status: str = "dead_letter") -> None:
    """A WAL holding n jobs of `handler` that ended `status` with `error(i)` (a
    dead letter's attempts used up), as if they had failed one by one in the last hour."""
    from jobd.core import records as R
    from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job
    from jobd.storage import codec, wal

    wal_dir = os.path.join(data_dir, "wal")
    os.makedirs(wal_dir, exist_ok=True)
    now = time.time()
    buf = bytearray(wal._header())
    chunk: list[Any] = []
    for i in range(n):
        t = now - 3600.0 + 3000.0 * i / n
        job = Job.new(f"{i:032x}", handler, 10, i + 1, t, (0, 1.0, 2.0, None, None, None),
                      None, EMPTY_ARGS, EMPTY_KWARGS, EMPTY_DICT, EMPTY_LIST)
        job.status, job.attempts = status, 1
        job.started_at, job.completed_at = t, t + 0.01
        job.error = error(i) if status != "completed" else None
        chunk.append(job.to_record())
        if len(chunk) == CHUNK:
            codec.encode_into(buf, [R.JOBS, chunk])
            chunk = []
    if chunk:
        codec.encode_into(buf, [R.JOBS, chunk])
    with open(os.path.join(wal_dir, "00000001.log"), "wb") as f:
        f.write(buf)


def timed(c: Conn, op: str, **args: Any) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    reply = c.call(op, **args)
    return (time.perf_counter() - t0) * 1e3, reply


def replay_s(d: Daemon) -> float:
    logged = RECOVERED.findall(d.log_text())
    return float(logged[-1][2]) if logged else float("nan")


def measure(args: argparse.Namespace, n: int, status: str) -> dict[str, float]:
    config = f"[queue]\nmax_size = {2 * n}\n[dead_letter]\nmax_size = {2 * n}\n"
    d = Daemon(workers=0, fsync="always", config=config, root=args.data_root,
               start_timeout=600, stop_timeout=300)
    write_dead_letters(d.data_dir, n, NOOP, status=status)
    with d, d.conn(timeout=600) as c:
        out = {"replay s (daemon log)": replay_s(d)}
        if status != "dead_letter":
            return out
        # Replay left them ungrouped; the first answer waits for the grouping.
        out["first failure_groups after start s (grouping after replay)"] = \
            timed(c, "failure_groups")[0] / 1e3
        groups_ms, reply = zip(*(timed(c, "failure_groups") for _ in range(CALLS)))
        found = sum(g["count"] for g in reply[-1]["groups"])
        if found != n or len(reply[-1]["groups"]) != GROUPS:
            raise RuntimeError(f"expected {n} dead letters in {GROUPS} groups, got {found} in "
                               f"{len(reply[-1]['groups'])}")
        out["failure_groups round trip ms"] = median(list(groups_ms))
        out["failure_groups round trip ms (handler set)"] = median(
            [timed(c, "failure_groups", handler=NOOP)[0] for _ in range(CALLS)])
        out["hello round trip ms"] = median([timed(c, "hello")[0] for _ in range(CALLS)])
        out["RSS B per dead letter (total RSS / N)"] = d.rss() / n
    return out


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    n = 50_000 if args.quick else 1_000_000
    for rep in range(args.repeats):
        res = measure(args, n, "dead_letter")
        params = f"{n:,} dead letters in {GROUPS} groups (every message distinct), fsync=always"
        for metric, value in res.items():
            rows.add(SCENARIO, params, metric, value)
        same = measure(args, n, "completed")
        rows.add(SCENARIO, f"{n:,} completed jobs (nothing to group), fsync=always",
                 "replay s (daemon log)", same["replay s (daemon log)"])
        log(f"failures rep {rep + 1}: failure_groups {res['failure_groups round trip ms']:.3f} ms "
            f"over {n:,} dead letters; replay {res['replay s (daemon log)']:.2f} s "
            f"(completed: {same['replay s (daemon log)']:.2f} s)")
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
