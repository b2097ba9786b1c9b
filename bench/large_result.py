"""Large results (issue 5): 10 MB and 100 MB result round trips.

The handler returns a string of S characters (hex of random bytes, so compression has real
work). The client writes `submit` + `result` with `wait` in one write and the clock stops
when the whole `result` reply line has been read (the reply is then decoded, outside the
timing, and its length checked). Reported: submit→result received (s), the handler's own
duration as reported by jobd, and MB/s of result payload. 1 worker, fsync=always, a fresh
daemon per repeat. Run alone: `python -m bench.large_result [--quick]` (quick: 1 MB, 10 MB).
"""
from __future__ import annotations

import argparse
import time

import orjson

from bench.common import BLOB, Daemon, Rows, log, standalone

SCENARIO = "large result"
MB = 1_000_000


def round_trip(d: Daemon, size: int, tag: str) -> tuple[float, float]:
    with d.conn(timeout=600) as c:
        jid = f"blob-{tag}-{size}"
        data = (orjson.dumps({"op": "submit", "id": 0, "job_id": jid, "handler": BLOB, "args": [size]})
                + b"\n" + orjson.dumps({"op": "result", "id": 1, "job_id": jid, "wait": 600}) + b"\n")
        t0 = time.perf_counter()
        c.send(data)
        lines = {}
        while len(lines) < 2:
            line = c.read_line()
            lines[b'"id":1,' in line[-40:] or b'"id":1}' in line[-40:]] = line
        elapsed = time.perf_counter() - t0
    reply = orjson.loads(lines[True])
    if not reply.get("ok") or reply.get("status") != "completed" or len(reply.get("result") or "") != size:
        got = len(reply.get("result") or "") if isinstance(reply.get("result"), str) else reply.get("result")
        raise RuntimeError(f"large result {size}: bad reply: status={reply.get('status')} "
                           f"error={str(reply.get('error'))[:300]} result length={got}")
    return elapsed, float(reply.get("duration") or 0.0)


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    sizes = [1 * MB, 10 * MB] if args.quick else [10 * MB, 100 * MB]
    for rep in range(args.repeats):
        with Daemon(workers=1, fsync="always", root=args.data_root, stop_timeout=120) as d:
            for size in sizes:
                try:
                    elapsed, handler_s = round_trip(d, size, str(rep))
                except Exception as e:  # noqa: BLE001 - report and go on with the other sizes
                    log(f"large result {size // MB} MB failed: {e}")
                    continue
                params = f"{size // MB} MB string result, 1 worker, fsync=always"
                rows.add(SCENARIO, params, "submit→result received s", elapsed)
                rows.add(SCENARIO, params, "handler duration s (jobd's `duration`)", handler_s)
                rows.add(SCENARIO, params, "result MB/s (end to end)", size / MB / elapsed)
                log(f"large result rep {rep + 1}: {size // MB} MB in {elapsed:.3f} s "
                    f"(handler {handler_s:.3f} s); daemon RSS now {d.rss() / 2**20:.0f} MiB")
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
