"""Mixed-priority load (issue 5): do higher priorities finish earlier under a backlog?

2 workers run while one client submits N no-op jobs, a quarter each at low/normal/high/
critical in a seeded random order, with pipelined `submit_many` batches of 100 (submitting
is faster than draining, so a backlog forms and the heap decides). When every job is done,
the job views (`list`) give per priority the mean and p50 of submit→complete
(completed_at − created_at) and the mean queue time (started_at − created_at). Also:
overall jobs/s (first submit → last completion) and whether the mean submit→complete is
strictly ordered critical < high < normal < low (1 = yes, 0 = no).
fsync=always. Run alone: `python -m bench.mixed [--quick]`.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime

from bench.common import NOOP, Daemon, Rows, log, percentile, standalone
from bench.drain import submit_jobs

SCENARIO = "mixed priority"
PRIORITIES = ("critical", "high", "normal", "low")
VALUES = {"low": 0, "normal": 10, "high": 20, "critical": 30}


def ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    n = 4_000 if args.quick else 20_000
    for rep in range(args.repeats):
        rng = random.Random(1234 + rep)
        prios = [PRIORITIES[i % 4] for i in range(n)]
        rng.shuffle(prios)
        jobs = [{"handler": NOOP, "priority": p} for p in prios]
        with Daemon(workers=2, fsync="always", root=args.data_root) as d, d.conn() as c:
            t0 = time.perf_counter()
            submit_jobs(c, jobs, batch=100)
            while True:
                q = c.call("metrics")["metrics"]["queue"]
                if q["completed"] + q["failed"] + q["dead_letter"] + q["cancelled"] >= n:
                    break
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError(f"mixed: not done after 600 s: {q}")
                time.sleep(0.01)
            elapsed = time.perf_counter() - t0
            if q["completed"] != n:
                log(f"mixed: only {q['completed']} of {n} completed: {q}")
            views = c.call("list", status="completed", limit=n)["jobs"]
        by: dict[int, list[tuple[float, float]]] = {v: [] for v in VALUES.values()}
        for j in views:
            created = ts(j["created_at"])
            by[j["priority"]].append((ts(j["completed_at"]) - created, ts(j["started_at"]) - created))
        params = f"2 workers, no-op job, 4 priorities × {n // 4:,} interleaved, fsync=always"
        rows.add(SCENARIO, params, "jobs/s (first submit → last completion)", n / elapsed)
        means = []
        for name in PRIORITIES:
            vals = by[VALUES[name]]
            e2e = [v[0] for v in vals]
            means.append(statistics.fmean(e2e) * 1e3)
            rows.add(SCENARIO, params, f"{name}: mean submit→complete ms", means[-1])
            rows.add(SCENARIO, params, f"{name}: p50 submit→complete ms", percentile(e2e, 50) * 1e3)
            rows.add(SCENARIO, params, f"{name}: mean queue time ms",
                     statistics.fmean(v[1] for v in vals) * 1e3)
        ordered = all(a < b for a, b in zip(means, means[1:]))
        rows.add(SCENARIO, params, "priority order respected (1 = yes)", 1.0 if ordered else 0.0)
        log(f"mixed rep {rep + 1}: {n / elapsed:,.0f} jobs/s; mean submit→complete ms "
            + ", ".join(f"{p} {m:.1f}" for p, m in zip(PRIORITIES, means))
            + f"; ordered: {ordered}")
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
