"""Submit throughput and latency (issue 2; targets in issue 5).

For each fsync mode (always, interval, never), with `--workers 0` so that no execution
interferes, N no-op jobs are submitted over a raw socket:

- `sequential`: one request in flight (write, wait for the reply, repeat); latency per request;
- `pipelined W`: a window of W requests in flight, refilled with one write per read of replies;
  latency = a request's write → its reply read;
- `submit_many B`: batches of B jobs per `submit_many`, one batch in flight; latency per batch.

The sequential variant runs once more with `[server] busy_poll_us = 0`: the daemon's
adaptive busy polling (on by default, docs/operations.md) turned off, to show what it buys.

Every variant runs on a fresh daemon (empty WAL). Run alone: `python -m bench.submit [--quick]`.
"""
from __future__ import annotations

import argparse
import time

import orjson

from bench.common import FSYNC_MODES, NOOP, Conn, Daemon, Rows, log, percentile, standalone

SCENARIO = "submit"


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"sequential": 500, "pipelined": 5_000, "many": 5_000}
    return {"sequential": 5_000, "pipelined": 50_000, "many": 50_000}


def submit_line(i: int) -> bytes:
    return orjson.dumps({"op": "submit", "id": i, "handler": NOOP}) + b"\n"


def round_trips(c: Conn, requests: list[bytes], what: str) -> tuple[float, list[float]]:
    """Send each request and wait for its reply: (total seconds, per-request latencies)."""
    lat = []
    pc = time.perf_counter
    t_start = pc()
    for req in requests:
        t0 = pc()
        c.send(req)
        reply = c.read_line()
        lat.append(pc() - t0)
        if b'"ok":true' not in reply:
            raise RuntimeError(f"{what} failed: {reply[:300]!r}")
    return pc() - t_start, lat


def sequential(c: Conn, n: int) -> tuple[float, list[float]]:
    return round_trips(c, [submit_line(i) for i in range(n)], "submit")


def pipelined(c: Conn, n: int, window: int) -> tuple[float, list[float]]:
    lines = [submit_line(i) for i in range(n)]
    sent_at = [0.0] * n
    lat = []
    pc = time.perf_counter
    sent = done = 0
    t_start = pc()
    while done < n:
        k = min(window - (sent - done), n - sent)
        if k > 0:
            t = pc()
            c.send(b"".join(lines[sent:sent + k]))
            for j in range(sent, sent + k):
                sent_at[j] = t
            sent += k
        replies = c.read_lines()
        t = pc()
        for r in replies:
            if b'"ok":true' not in r:
                raise RuntimeError(f"submit failed: {r[:300]!r}")
            lat.append(t - sent_at[done])
            done += 1
    return pc() - t_start, lat


def submit_many(c: Conn, n: int, batch: int) -> tuple[float, list[float]]:
    job = {"handler": NOOP}
    reqs = [orjson.dumps({"op": "submit_many", "id": i, "jobs": [job] * min(batch, n - off)}) + b"\n"
            for i, off in enumerate(range(0, n, batch))]
    return round_trips(c, reqs, "submit_many")


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    n = sizes(args.quick)
    variants = [
        ("sequential (1 in flight)", "sequential", lambda c: sequential(c, n["sequential"]), n["sequential"]),
        ("pipelined, window 100", "pipelined", lambda c: pipelined(c, n["pipelined"], 100), n["pipelined"]),
        ("pipelined, window 1000", "pipelined", lambda c: pipelined(c, n["pipelined"], 1000), n["pipelined"]),
        ("submit_many, batch 100", "many", lambda c: submit_many(c, n["many"], 100), n["many"]),
        ("submit_many, batch 1000", "many", lambda c: submit_many(c, n["many"], 1000), n["many"]),
    ]
    polled = ("sequential (1 in flight), busy_poll_us=0", "sequential",
              variants[0][2], n["sequential"])
    for rep in range(args.repeats):
        for mode in FSYNC_MODES:
            for label, kind, fn, count in variants + [polled]:
                config = "[server]\nbusy_poll_us = 0\n" if "busy_poll" in label else ""
                with Daemon(workers=0, fsync=mode, root=args.data_root, config=config) as d, \
                        d.conn() as c:
                    c.call("hello")
                    elapsed, lat = fn(c)
                    m = c.call("metrics")["metrics"]
                pending = m["queue"]["pending"]
                if pending != count:
                    log(f"submit: expected {count} pending jobs, metrics say {pending}")
                params = f"{label}, fsync={mode}, N={count:,}"
                unit = "per batch" if kind == "many" else "per request"
                rows.add(SCENARIO, params, "jobs/s", count / elapsed)
                rows.add(SCENARIO, params, f"p50 latency ms ({unit})", percentile(lat, 50) * 1e3)
                rows.add(SCENARIO, params, f"p99 latency ms ({unit})", percentile(lat, 99) * 1e3)
                log(f"submit rep {rep + 1}: {params}: {count / elapsed:,.0f} jobs/s "
                    f"(p50 {percentile(lat, 50) * 1e3:.3f} ms, fsyncs {m['wal']['fsyncs']})")
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
