"""What the dashboard costs the queue: drain throughput with the dashboard open
on 5 tabs against the same drain with it closed.

N no-op jobs are submitted to a daemon with `--workers 0` (fsync=always), then
`scale` to 2 workers and the clock runs until `metrics` shows them all done
(bench/drain.py's measurement). Three variants, alternating within each repeat:

- `jobd alone`: no web process;
- `jobd web, dashboard closed`: `jobd web` running (its metrics sampler and its
  one upstream `watch` are on), no browser;
- `jobd web, 5 tabs open`: headless chromium (Debian's, through Playwright)
  with 5 tabs: overview, jobs, overview, jobs, overview. Every tab keeps its
  event stream open and is visible (checked) for the whole drain.

The variants alternate within each repeat. A drain that other processes
disturbed (more than 10 % of the machine during the drain, counting as ours
the daemon and its workers, jobd web, chromium and this script) is redone, up
to 3 times; their share in the run kept is a row.

Also printed: the CPU seconds `jobd web` and chromium used during the drain.
Needs the `web` extra and Playwright (the test extra) and /usr/bin/chromium
(`JOBD_CHROMIUM` to use another). Run alone: `python -m bench.web_dashboard [--quick]`.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import (
    FOREIGN_LIMIT,
    NOOP,
    REPO,
    Daemon,
    Rows,
    log,
    process_cpu_s,
    standalone,
    wait_for_quiet,
)
from bench.drain import scale_and_wait, submit_jobs

SCENARIO = "web_dashboard"
WORKERS = 2
TABS = ["/", "/jobs", "/", "/jobs", "/"]
CHROMIUM = os.environ.get("JOBD_CHROMIUM", "/usr/bin/chromium")
ALONE, CLOSED, OPEN = "jobd alone", "jobd web, dashboard closed", "jobd web, 5 tabs open (3 overview, 2 jobs)"


@contextmanager
def web_process(d: Daemon) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`jobd web` on a free loopback port for daemon `d`; yields (process, base URL)."""
    log_path = os.path.join(d.root, "web.log")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "jobd", "web", "--listen", "127.0.0.1:0",
                                 "--socket", d.socket, "--log-level", "warning"], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    try:
        yield proc, wait_serving(proc, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_serving(proc: subprocess.Popen[bytes], log_path: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jobd web exited with {proc.returncode}: {open(log_path).read()[-2000:]}")
        m = re.search(r"serving (http://\S+)", open(log_path, errors="replace").read())
        if m:
            return m.group(1).rstrip("/")
        time.sleep(0.02)
    raise RuntimeError("jobd web did not start serving in time")


@contextmanager
def tabs(base: str) -> Iterator[list[Any]]:
    """Headless chromium with one tab per entry of TABS, each live on the event stream."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            pages = []
            for route in TABS:
                page = context.new_page()
                page.goto(f"{base}/#{route}")
                page.wait_for_selector("#live.st-live", timeout=30_000)
                pages.append(page)
            yield pages
        finally:
            browser.close()


def visible_and_live(pages: list[Any]) -> bool:
    return all(p.evaluate("!document.hidden && document.querySelector('#live').textContent === 'live'")
               for p in pages)


def _procs() -> Iterator[tuple[int, bytes, list[str]]]:
    """(pid, argv[0], /proc/pid/stat fields after the name) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0]
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), argv0, fields


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chromium_cpu_s() -> float:
    """CPU seconds so far of every chromium process (this benchmark's are the only ones)."""
    name = os.path.basename(CHROMIUM).encode()
    return sum(_cpu(fields) for _, argv0, fields in _procs() if name in argv0)


def ours_cpu_s(d: Daemon, web_pid: int | None) -> float:
    """CPU seconds so far of what this benchmark runs: the daemon's session (it and its
    workers), jobd web, chromium, and this script."""
    name = os.path.basename(CHROMIUM).encode()
    total = sum(_cpu(fields) for pid, argv0, fields in _procs()
                if int(fields[3]) == d.pid or pid == web_pid or name in argv0)
    t = os.times()
    return total + t.user + t.system


def machine_busy_s() -> float:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return (sum(parts) - parts[3] - (parts[4] if len(parts) > 4 else 0)) / os.sysconf("SC_CLK_TCK")


Result = tuple[float, float, float, float, float]


def drain(d: Daemon, n: int, web_pid: int | None) -> Result:
    """Submit n no-op jobs, then drain them with WORKERS workers: jobs/s, the daemon's
    CPU µs per job, jobd web's and chromium's CPU seconds during the drain, and the
    share of the machine other processes took meanwhile.
    The daemon's loop is what limits the drain: its CPU per job is the cost that
    matters, and other work on a shared machine does not blur it as it does the rate."""
    with d.conn() as c:
        submit_jobs(c, [{"handler": NOOP}] * n)
        daemon0 = process_cpu_s(d.pid)
        web0 = process_cpu_s(web_pid) if web_pid else 0.0
        browser0 = chromium_cpu_s()
        busy0, ours0 = machine_busy_s(), ours_cpu_s(d, web_pid)
        elapsed = scale_and_wait(c, n, WORKERS)
        foreign = (machine_busy_s() - busy0) - (ours_cpu_s(d, web_pid) - ours0)
        daemon_us = (process_cpu_s(d.pid) - daemon0) / n * 1e6
        web = process_cpu_s(web_pid) - web0 if web_pid else 0.0
        browser = chromium_cpu_s() - browser0
    share = max(0.0, foreign) / (elapsed * len(os.sched_getaffinity(0)))
    return n / elapsed, daemon_us, web, browser, share


def one_run(args: argparse.Namespace, variant: str, n: int) -> Result:
    with Daemon(workers=0, fsync="always", root=args.data_root) as d:
        if variant == ALONE:
            return drain(d, n, None)
        with web_process(d) as (proc, base):
            if variant == CLOSED:
                return drain(d, n, proc.pid)
            with tabs(base) as pages:
                result = drain(d, n, proc.pid)
                if not visible_and_live(pages):
                    log("web_dashboard: a tab was hidden or not live during the drain")
                return result


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    n = 5_000 if args.quick else 100_000
    for rep in range(args.repeats):
        for variant in (ALONE, CLOSED, OPEN):
            rate, daemon_us, web_cpu, browser_cpu, share = undisturbed(args, variant, n)
            params = f"{WORKERS} workers, no-op job, fsync=always, N={n:,}, {variant}"
            rows.add(SCENARIO, params, "jobs/s", rate)
            rows.add(SCENARIO, params, "daemon CPU µs per job", daemon_us)
            if variant != ALONE:
                rows.add(SCENARIO, params, "jobd web CPU s during the drain", web_cpu)
            if variant == OPEN:
                rows.add(SCENARIO, params, "chromium CPU s during the drain", browser_cpu)
            rows.add(SCENARIO, params, "other processes' share of the machine (%)", share * 100)
            log(f"web_dashboard rep {rep + 1}: {variant}: {rate:,.0f} jobs/s, daemon {daemon_us:.1f} µs/job, "
                f"jobd web CPU {web_cpu:.2f} s, chromium CPU {browser_cpu:.2f} s")
    return rows


def undisturbed(args: argparse.Namespace, variant: str, n: int, tries: int = 3) -> Result:
    """One run on a quiet machine, redone when other processes took more than
    FOREIGN_LIMIT of it during the drain."""
    for attempt in range(tries):
        if args.quiet_wait > 0:
            wait_for_quiet(max_wait=args.quiet_wait)
        result = one_run(args, variant, n)
        if result[4] <= FOREIGN_LIMIT or attempt == tries - 1:
            return result
        log(f"{variant}: other processes took {result[4] * 100:.0f}% of the machine meanwhile; redoing it")
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()
