"""Paired runs against other code: the hot-path rows, before and after in alternation.

`python -m bench.pairs --before DIR [--after DIR] [--repeats 5] [--quick] [--only drain,...]`

DIR is another checkout of jobd (`git worktree add /tmp/before <commit>`); each daemon runs
from its own tree with this interpreter (`Daemon(code=...)`: its cwd and first on
PYTHONPATH). For every case of every repeat the two sides run back to back, the side that
goes first alternating between repeats, so a pair shares the machine's phase (which moves
the same code by up to ±40 % between hours here). A fresh daemon per run. Cases, the same
client loops as the suite's scenarios, fsync=always unless stated:

- drain: N = 20,000 no-op jobs pre-submitted with `--workers 0`, then 1 or 2 workers
  (bench/drain.py): jobs/s, and the daemon's own CPU µs per job (`/proc`);
- submit (bench/submit.py): 1 in flight (fsync=always and interval), pipelined with a
  window of 1000, `submit_many` of 1000: jobs/s;
- latency (bench/latency.py): submit→complete p50 and p99 at idle (one job at a time,
  1 ms apart, 2 workers), fsync=always and interval.

Before each pair the machine is given up to `--quiet-wait` s to be idle; a pair during
which other processes (not this one, its daemons and their workers) took more than 10 %
of the machine is redone (up to 3 tries); their share is printed with the table.

One table: each side's median (min – max) over the repeats, after/before of the medians,
and the median (min – max) of the per-pair ratios (each pair ran within seconds).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import latency, submit
from bench.common import (
    NOOP,
    REPO,
    Conn,
    Daemon,
    Undisturbed,
    fmt,
    log,
    machine_header,
    machine_info,
    markdown_table,
    median,
    percentile,
)
from bench.drain import drain_timed

BEFORE, AFTER = "before", "after"
Measure = Callable[[str, argparse.Namespace], dict[str, float]]


@dataclass(frozen=True)
class Case:
    scenario: str
    params: str
    measure: Measure           # (source tree, args) → {metric: value}


@dataclass(frozen=True)
class Sizes:
    drain: int
    sequential: int
    pipelined: int
    latency: int


def sizes(quick: bool) -> Sizes:
    return Sizes(2_000, 500, 5_000, 200) if quick else Sizes(20_000, 5_000, 50_000, 2_000)


# --- the cases -----------------------------------------------------------------------------
def drain_case(workers: int, n: int) -> Case:
    def measure(code: str, args: argparse.Namespace) -> dict[str, float]:
        with Daemon(workers=0, fsync="always", root=args.data_root, code=code) as d:
            secs, cpu = drain_timed(d, n, workers, NOOP, [])
        return {"jobs/s": n / secs, "daemon CPU µs per job": cpu / n * 1e6}
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    return Case("drain", f"{label}, no-op job, fsync=always, N={n:,}", measure)


def submit_case(label: str, loop: Callable[[Conn, int], tuple[float, list[float]]],
                fsync: str, n: int) -> Case:
    def measure(code: str, args: argparse.Namespace) -> dict[str, float]:
        with Daemon(workers=0, fsync=fsync, root=args.data_root, code=code) as d, d.conn() as c:
            c.call("hello")
            secs, _lat = loop(c, n)
        return {"jobs/s": n / secs}
    return Case("submit", f"{label}, fsync={fsync}, N={n:,}", measure)


def latency_case(fsync: str, n: int) -> Case:
    def measure(code: str, args: argparse.Namespace) -> dict[str, float]:
        with Daemon(workers=2, fsync=fsync, root=args.data_root, code=code) as d:
            done = latency.measure(d, n, f"{fsync}-{time.perf_counter_ns()}", 0.001,
                                   starts=False)["submit→complete"]
        return {"submit→complete p50 ms": percentile(done, 50) * 1e3,
                "submit→complete p99 ms": percentile(done, 99) * 1e3}
    return Case("latency", f"1 job at a time (1 ms apart), 2 workers, no-op job, fsync={fsync}, "
                           f"N={n:,}", measure)


def cases(n: Sizes) -> list[Case]:
    return [
        drain_case(2, n.drain),
        drain_case(1, n.drain),
        submit_case("sequential (1 in flight)", submit.sequential, "always", n.sequential),
        submit_case("sequential (1 in flight)", submit.sequential, "interval", n.sequential),
        submit_case("pipelined, window 1000", lambda c, k: submit.pipelined(c, k, 1000),
                    "always", n.pipelined),
        submit_case("submit_many, batch 1000", lambda c, k: submit.submit_many(c, k, 1000),
                    "always", n.pipelined),
        latency_case("always", n.latency),
        latency_case("interval", n.latency),
    ]


# --- collecting and printing ---------------------------------------------------------------
class Pairs:
    """Values per (case, metric) and side, in repeat order: index i of both sides is a pair."""

    def __init__(self) -> None:
        self.values: dict[tuple[Case, str], dict[str, list[float]]] = {}

    def add(self, case: Case, side: str, measured: dict[str, float]) -> None:
        for metric, value in measured.items():
            self.values.setdefault((case, metric), {BEFORE: [], AFTER: []})[side].append(value)

    def rows(self) -> list[list[str]]:
        return [[case.scenario, case.params, metric, *cells(sides[BEFORE], sides[AFTER])]
                for (case, metric), sides in self.values.items()]


def spread(values: list[float]) -> str:
    return f"{fmt(median(values))} ({fmt(min(values))} – {fmt(max(values))})"


def cells(before: list[float], after: list[float]) -> list[str]:
    if not before or not after:
        return [spread(before) if before else "n/a", spread(after) if after else "n/a", "n/a", "n/a"]
    ratios = [a / b * 100 for a, b in zip(after, before)]
    of_medians = median(after) / median(before) * 100
    return [spread(before), spread(after), f"{of_medians:.1f} %",
            f"{median(ratios):.1f} % ({min(ratios):.1f} – {max(ratios):.1f})"]


def table(pairs: Pairs) -> str:
    return markdown_table(["scenario", "parameters", "metric", "before: median (min – max)",
                           "after: median (min – max)", "after/before", "per pair: median (min – max)"],
                          pairs.rows())


# --- the run -------------------------------------------------------------------------------
def one_pair(case: Case, order: tuple[str, str], args: argparse.Namespace,
             seen: Undisturbed) -> dict[str, dict[str, float]]:
    """Both sides of one case back to back (redone as a whole if disturbed)."""
    trees = {BEFORE: args.before, AFTER: args.after}
    return seen.run(lambda: {side: case.measure(trees[side], args) for side in order},
                    f"{case.scenario} {case.params}", args.quiet_wait)


def run_pairs(args: argparse.Namespace, chosen: list[Case]) -> tuple[Pairs, Undisturbed]:
    pairs, seen = Pairs(), Undisturbed()
    for rep in range(args.repeats):
        order = (BEFORE, AFTER) if rep % 2 == 0 else (AFTER, BEFORE)
        log(f"=== repeat {rep + 1} ({' then '.join(order)}) ===")
        for case in chosen:
            for side, measured in one_pair(case, order, args, seen).items():
                pairs.add(case, side, measured)
                log(f"{case.scenario} {case.params} [{side}]: "
                    + ", ".join(f"{k} {fmt(v)}" for k, v in measured.items()))
    return pairs, seen


def commit_of(tree: str) -> str:
    """The tree's commit, and whether its jobd/ has changes not committed."""
    git = ["git", "-C", tree]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(git + ["status", "--porcelain", "--", "jobd", "jobd_client"],
                           capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    return head.stdout.strip() + (" + uncommitted changes in jobd/" if dirty.stdout.strip() else "")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="source tree of the code to compare against")
    p.add_argument("--after", default=REPO, help="source tree of the new code (default: this one)")
    p.add_argument("--quick", action="store_true", help="small N: a fast smoke run")
    p.add_argument("--repeats", type=int, default=5, help="pairs per case (default 5)")
    p.add_argument("--only", default="", help="comma-separated scenarios: drain,submit,latency")
    p.add_argument("--data-root", default=None, help="where to create temp data dirs (default $TMPDIR)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="before each pair wait up to this many seconds for the machine to be "
                        "idle (<15%% busy over 1 s) (default 60)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    chosen = [c for c in cases(sizes(args.quick)) if not only or c.scenario in only]
    info = machine_info(args.data_root)
    started = time.time()
    pairs, seen = run_pairs(args, chosen)
    print(machine_header(info))
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(started))}; command: "
          f"python -m bench.pairs {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"before: {args.before} ({commit_of(args.before)}); after: {args.after} ({commit_of(args.after)})")
    print(f"Other processes' CPU during the pairs (share of the machine): {seen.summary()}")
    print(f"Repeats (pairs): {args.repeats}{' (quick)' if args.quick else ''}; "
          f"total {time.time() - started:.0f} s\n")
    print(table(pairs))


if __name__ == "__main__":
    main()
