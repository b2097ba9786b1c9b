"""Ceilings measured here: jobd next to its bare building blocks, in pairs.

Issue 5 sets its targets against ceilings measured "on this machine class" (a bare uvloop
JSON-lines server with and without an fsync per request, pipelined with group commit, ...).
Those figures depend on the machine as much as on the code: on a VM whose idle vCPUs halt
(`guest_halt_poll_ns` = 0, see the machine header) every wake-up of a sleeping process costs
tens of µs, and a round trip pays several. So this scenario rebuilds the ceilings
(bench/bare.py: the same socket, framing, orjson, file appends and fdatasync as jobd, no
job logic) and measures each right next to the jobd variant it bounds, with the same client
code, alternating which goes first. Per repeat it reports both and jobd as a % of the
bare figure; the medians of those ratios are what the targets table compares.

Pairs:
- sequential submits (1 in flight), fsync=always: bare (fsync per request) vs jobd;
- sequential submits, no fsync on the reply path: bare `never` vs jobd `interval`;
- pipelined submits, window 1000, fsync=always: bare (group commit per read) vs jobd;
- one job at a time, 1 ms apart, 2 workers: submit→complete through a bare relay
  (client → server → forked worker → server → client; with fsync=always the submit is
  fsynced before its ack and the completion written before the result, as jobd does) vs
  jobd; with fsync=always, and bare `never` vs jobd `interval`.

Run alone: `python -m bench.ceiling [--quick] [--repeats N]`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from bench import latency, submit
from bench.common import REPO, Conn, Daemon, Rows, log, percentile, standalone

SCENARIO = "ceiling"


class BareServer:
    """`python -m bench.bare` as a subprocess; the same surface as `Daemon` for the clients."""

    def __init__(self, fsync: str, workers: int = 0, root: str | None = None) -> None:
        self.fsync, self.workers = fsync, workers
        self.root = tempfile.mkdtemp(prefix="jobd-bench-bare-", dir=root)
        self.socket = os.path.join(self.root, "bare.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BareServer:
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bare", "--socket", self.socket,
             "--file", os.path.join(self.root, "log"), "--workers", str(self.workers),
             "--fsync", "always" if self.fsync == "always" else "never"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            start_new_session=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"bench.bare did not start (exit {self.proc.wait()})")
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)     # its own session: it and its workers
        except ProcessLookupError:
            pass
        self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def conn(self, timeout: float | None = 120.0) -> Conn:
        return Conn(self.socket, timeout)


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"sequential": 500, "pipelined": 5_000, "latency": 300}
    return {"sequential": 5_000, "pipelined": 50_000, "latency": 2_000}


Measure = Callable[[Any], float]          # server → the figure (jobs/s or ms)


def pairs(n: dict[str, int]) -> list[tuple[str, str, str, str, dict[str, Any], Measure]]:
    """(label, unit, bare fsync, jobd fsync, server kwargs, measure)."""
    def seq(s: Any) -> float:
        with s.conn() as c:
            elapsed, _ = submit.sequential(c, n["sequential"])
        return n["sequential"] / elapsed

    def piped(s: Any) -> float:
        with s.conn() as c:
            elapsed, _ = submit.pipelined(c, n["pipelined"], 1000)
        return n["pipelined"] / elapsed

    def idle_p50(s: Any) -> float:
        res = latency.measure(s, n["latency"], f"ceiling-{id(s)}", 0.001, starts=False)
        return percentile(res["submit→complete"], 50) * 1e3

    w0: dict[str, Any] = {"workers": 0}
    w2: dict[str, Any] = {"workers": 2}
    return [
        (f"submit, 1 in flight, N={n['sequential']:,}", "jobs/s", "always", "always", w0, seq),
        (f"submit, 1 in flight, N={n['sequential']:,}", "jobs/s", "never", "interval", w0, seq),
        (f"submit pipelined, window 1000, N={n['pipelined']:,}", "jobs/s", "always", "always", w0,
         piped),
        (f"submit→complete p50, 1 job at a time 1 ms apart, 2 workers, N={n['latency']:,}", "ms",
         "always", "always", w2, idle_p50),
        (f"submit→complete p50, 1 job at a time 1 ms apart, 2 workers, N={n['latency']:,}", "ms",
         "never", "interval", w2, idle_p50),
    ]


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    for rep in range(args.repeats):
        for k, (label, unit, bare_fsync, jobd_fsync, kw, fn) in enumerate(pairs(sizes(args.quick))):
            got: dict[str, float] = {}
            order = ("bare", "jobd") if (rep + k) % 2 == 0 else ("jobd", "bare")
            for who in order:
                if who == "bare":
                    with BareServer(bare_fsync, kw["workers"], root=args.data_root) as b:
                        got[who] = fn(b)
                else:
                    with Daemon(fsync=jobd_fsync, root=args.data_root, **kw) as d:
                        got[who] = fn(d)
            params = f"{label}: bare fsync={bare_fsync} vs jobd fsync={jobd_fsync}"
            rows.add(SCENARIO, params, f"bare {unit}", got["bare"])
            rows.add(SCENARIO, params, f"jobd {unit}", got["jobd"])
            # "% of the ceiling": throughput jobd/bare, latency bare/jobd (higher is better).
            pct = got["jobd"] / got["bare"] if unit == "jobs/s" else got["bare"] / got["jobd"]
            rows.add(SCENARIO, params, "jobd as % of bare", pct * 100)
            log(f"ceiling rep {rep + 1}: {params}: bare {got['bare']:,.3f}, jobd {got['jobd']:,.3f} "
                f"{unit} ({pct * 100:.0f} %)")
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
