"""Latency at low load (issue 3; targets in issue 5): one job at a time, 2 workers.

For each job the client writes `submit` (with a client-chosen job_id) and `result` with
`wait` in ONE write on one connection, then reads both replies:

- submit→ack: write → the submit reply (the job is durable per the fsync mode);
- submit→complete: write → the `result` reply (the job ran and its completion was recorded);
- submit→start: write (wall clock) → the job's `started_at` (daemon wall clock, same host),
  read with `status` after the timed loop.

1 ms pause between jobs (idle daemon: on this VM every process involved is then asleep
and each wake-up pays a full cross-CPU wake of a halted vCPU), and for comparison with no
pause (back to back, still one job at a time). The first 20 jobs are warm-up and not
counted. fsync=always and fsync=interval; a fresh daemon per run. The 1 ms rows run once
more with `[server] busy_poll_us = 0` (the daemon's adaptive busy polling off) for comparison.
Run alone: `python -m bench.latency`.
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime
from typing import Any

import orjson

from bench.common import NOOP, Daemon, Rows, log, percentile, standalone

SCENARIO = "latency"
WARMUP = 20


def parse_iso(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def measure(d: Any, n: int, tag: str, pause: float, starts: bool = True) -> dict[str, list[float]]:
    """`d`: a `Daemon` (or bench.ceiling's bare server, with `starts=False`: no `status` op)."""
    ack, done, start = [], [], []
    early = 0
    sent_wall: dict[str, float] = {}
    pc = time.perf_counter
    with d.conn() as c:
        for i in range(n + WARMUP):
            jid = f"lat-{tag}-{i}"
            data = (orjson.dumps({"op": "submit", "id": 2 * i, "job_id": jid, "handler": NOOP}) + b"\n"
                    + orjson.dumps({"op": "result", "id": 2 * i + 1, "job_id": jid, "wait": 30}) + b"\n")
            wall = time.time()
            t0 = pc()
            c.send(data)
            # The replies may come in either order (`result` with a wait may answer before
            # the submit's ack): route them by id.
            got = {}
            for _ in range(2):
                line = c.read_line()
                got[orjson.loads(line)["id"] % 2] = (line, pc())
            (r1, t1), (r2, t2) = got[0], got[1]
            if t2 < t1:
                early += 1
            if b'"ok":true' not in r1 or b'"status":"completed"' not in r2:
                raise RuntimeError(f"job {jid} did not complete: {r1[:200]!r} {r2[:300]!r}")
            if i >= WARMUP:
                ack.append(t1 - t0)
                done.append(t2 - t0)
                sent_wall[jid] = wall
            if pause:
                time.sleep(pause)
        for jid, wall in sent_wall.items() if starts else ():
            job = c.call("status", job_id=jid)["job"]
            start.append(parse_iso(job["started_at"]) - wall)
    if early:
        log(f"latency: fsync={d.fsync}: {early} of {n + WARMUP} `result` replies (status completed) "
            "arrived BEFORE the ack of the job's own submit")
    if not starts:
        return {"submit→ack": ack, "submit→complete": done}
    return {"submit→ack": ack, "submit→start": start, "submit→complete": done}


# (fsync mode, pause between jobs, adaptive busy polling on); the last two rows show what
# the polling (on by default, docs/operations.md) buys.
VARIANTS = (("always", 0.001, True), ("interval", 0.001, True), ("always", 0.0, True),
            ("interval", 0.0, True), ("always", 0.001, False), ("interval", 0.001, False))


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    n = 300 if args.quick else 2_000
    for rep in range(args.repeats):
        for mode, pause, poll in VARIANTS:
            config = "" if poll else "[server]\nbusy_poll_us = 0\n"
            with Daemon(workers=2, fsync=mode, root=args.data_root, config=config) as d:
                res = measure(d, n, f"{rep}-{mode}-{pause}-{poll}", pause)
            spacing = "1 ms apart" if pause else "back to back"
            off = "" if poll else ", busy_poll_us=0"
            params = f"1 job at a time ({spacing}), 2 workers, no-op job, fsync={mode}{off}, N={n:,}"
            for what, vals in res.items():
                for p in (50, 99):
                    rows.add(SCENARIO, params, f"{what} p{p} ms", percentile(vals, p) * 1e3)
            log(f"latency rep {rep + 1}: fsync={mode}{off}, {spacing}: submit→complete p50 "
                f"{percentile(res['submit→complete'], 50) * 1e3:.3f} ms, p99 "
                f"{percentile(res['submit→complete'], 99) * 1e3:.3f} ms")
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
