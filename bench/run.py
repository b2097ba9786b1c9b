"""Run every benchmark scenario and print ONE markdown table with the machine header.

`python -m bench [--quick] [--repeats N] [--only submit,drain,...] [--replay-n N]`

Each scenario is also runnable alone: `python -m bench.submit`, `bench.drain`,
`bench.latency`, `bench.replay`, `bench.mixed`, `bench.large_result`, `bench.ceiling`,
`bench.flow`, `bench.failures`, `bench.web`. Paired runs against another checkout
(before/after a change, alternating in the same run) are `python -m bench.pairs --before DIR`,
not part of this table (nor is `bench.web_dashboard`, which needs chromium).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from bench import ceiling, drain, failures, flow, large_result, latency, mixed, replay, submit, web
from bench.common import Rows, cpu_busy, log, machine_header, machine_info, results_table, wait_for_quiet

SCENARIOS: dict[str, Callable[[argparse.Namespace], Rows]] = {
    "submit": submit.run,
    "drain": drain.run,
    "drain_limited": drain.run_limited,
    "latency": latency.run,
    "replay": replay.run,
    "mixed": mixed.run,
    "large_result": large_result.run,
    "ceiling": ceiling.run,
    "flow": flow.run,
    "failures": failures.run,
    "web": web.run,
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="jobd benchmark suite: one table for every scenario")
    p.add_argument("--quick", action="store_true", help="small N and 1 repeat: a fast smoke run")
    p.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 3, quick 1)")
    p.add_argument("--data-root", default=None, help="where to create temp data dirs (default $TMPDIR)")
    p.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="before each scenario wait up to this many seconds for the machine to be "
                        "idle (<15%% busy over 1 s); 0: don't wait (default 60)")
    p.add_argument("--replay-n", type=int, default=None,
                   help="pending jobs for the replay scenario (default 100,000 quick, 1,000,000 full)")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")

    info = machine_info(args.data_root)
    started = time.time()
    rows = Rows()
    failed = []
    quiet: list[str] = []
    for name in names:
        busy = wait_for_quiet(max_wait=args.quiet_wait) if args.quiet_wait > 0 else cpu_busy()
        quiet.append(f"{name} {busy * 100:.0f}%")
        log(f"=== {name} (machine {busy * 100:.0f}% busy just before) ===")
        t0 = time.perf_counter()
        try:
            if name == "replay":
                rows.extend(replay.run(args, n=args.replay_n))
            else:
                rows.extend(SCENARIOS[name](args))
        except Exception:  # noqa: BLE001 - one failing scenario must not hide the others
            failed.append(name)
            log(f"scenario {name} FAILED:\n{traceback.format_exc()}")
        log(f"=== {name} done in {time.perf_counter() - t0:.0f} s ===")

    end = machine_info(args.data_root)
    print(machine_header(info))
    print(f"fsync latency re-measured after the run: p50 {end['fsync_ms_p50']:.3f} ms, "
          f"p99 {end['fsync_ms_p99']:.3f} ms; load average at start {info['loadavg']}, "
          f"at end {end['loadavg']}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(started))}; "
          f"command: python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print("Machine CPU busy (all processes) in the second before each scenario: " + ", ".join(quiet))
    print(f"Repeats: {args.repeats}{' (quick)' if args.quick else ''}; "
          f"total {time.time() - started:.0f} s\n")
    print(results_table(rows))
    if failed:
        print(f"\nFAILED scenarios: {', '.join(failed)} (see stderr)")
        sys.exit(1)


if __name__ == "__main__":
    main()
