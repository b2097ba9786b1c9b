"""Restart with many pending jobs (issue 5): WAL replay speed and memory per pending job.

N small pending jobs (no-op handler) are written with pipelined `submit_many` (batches of
200) into a daemon with `--workers 0` and `[queue] max_size` raised above N; the daemon is
stopped with SIGTERM and restarted `repeats` times on the same data dir. Per restart:

- time to serving: process spawn → first `hello` answered (includes interpreter start,
  imports, WAL replay, fork server start);
- replay jobs/s: jobs recovered / replay time, both as logged by the daemon
  ("recovered J jobs from R WAL records in S s"). Jobs, not records: a snapshot
  holds up to 1,000 jobs per record, so records/s would flatter it;
- RSS per pending job: the daemon's VmRSS after restart divided by N, and the same minus
  the RSS of an empty daemon with the same flags (the per-job increment).

fsync=always. Run alone: `python -m bench.replay [--quick]` (N = 100,000 quick, 1,000,000 full).
"""
from __future__ import annotations

import argparse
import re
import time

from bench.common import NOOP, Daemon, Rows, log, standalone
from bench.drain import submit_jobs

SCENARIO = "replay"
RECOVERED = re.compile(r"recovered (\d+) jobs from (\d+) WAL records in ([\d.]+)s")


def run(args: argparse.Namespace, n: int | None = None) -> Rows:
    rows = Rows()
    n = n or (100_000 if args.quick else 1_000_000)
    config = f"[queue]\nmax_size = {2 * n}\n"
    with Daemon(workers=0, fsync="always", config=config, root=args.data_root) as empty:
        time.sleep(0.2)
        rss_empty = empty.rss()
    with Daemon(workers=0, fsync="always", config=config, root=args.data_root,
                start_timeout=600, stop_timeout=300) as d:
        t0 = time.perf_counter()
        with d.conn(timeout=600) as c:
            submit_jobs(c, [{"handler": NOOP}] * n)
            pending = c.call("metrics")["metrics"]["queue"]["pending"]
        log(f"replay: {n:,} jobs submitted in {time.perf_counter() - t0:.1f} s; pending={pending:,}; "
            f"RSS before restart {d.rss() / 2**20:.0f} MiB")
        if pending != n:
            raise RuntimeError(f"expected {n} pending, got {pending}")
        params = f"{n:,} pending no-op jobs, fsync=always"
        for rep in range(args.repeats):
            t_stop = time.perf_counter()
            rc = d.stop()
            stop_s = time.perf_counter() - t_stop
            if rc != 0:
                log(f"replay: jobd exited with status {rc} on SIGTERM")
            d.start()
            rss = d.rss()
            logged = RECOVERED.findall(d.log_text())
            jobs, records, secs = logged[-1] if logged else (0, 0, "nan")
            jobs, records, secs = int(jobs), int(records), float(secs)
            with d.conn() as c:
                pending = c.call("metrics")["metrics"]["queue"]["pending"]
            if pending != n or jobs != n:
                log(f"replay: after restart {pending:,} pending / {jobs:,} recovered, expected {n:,}")
            rows.add(SCENARIO, params, "time to serving s (spawn → hello)", d.ready_s)
            rows.add(SCENARIO, params, "WAL replay s (daemon log)", secs)
            rows.add(SCENARIO, params, "replay jobs/s (daemon log)",
                     jobs / secs if secs > 0 else float("nan"))
            rows.add(SCENARIO, params, "RSS B per pending job (total RSS / N)", rss / n)
            rows.add(SCENARIO, params, "RSS B per pending job (minus empty daemon)", (rss - rss_empty) / n)
            rows.add(SCENARIO, params, "graceful stop s (SIGTERM → exit)", stop_s)
            log(f"replay rep {rep + 1}: {records:,} records in {secs:.2f} s (log), serving after "
                f"{d.ready_s:.2f} s, RSS {rss / 2**20:.0f} MiB (empty daemon {rss_empty / 2**20:.0f} MiB), "
                f"stop took {stop_s:.2f} s")
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
