"""Shared helpers for the benchmark scripts.

- `machine_info()`: CPU model, cores, Python, fsync latency on a data dir.
- `Daemon`: start/stop a real `jobd serve` process on temp dirs.
- `Conn`: a raw JSON-lines socket (measures the daemon, not the client library).
- statistics helpers and the markdown table printer.

No speed is asserted anywhere: these scripts only measure and print.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANDLERS = "jobd.examples,bench.bench_handlers"
NOOP = "jobd.examples.noop"
TOUCH = "bench.bench_handlers.touch"
BLOB = "bench.bench_handlers.blob"
FSYNC_MODES = ("always", "interval", "never")
FOREIGN_LIMIT = 0.10    # other processes' share of the machine during a measurement before it is redone
T = TypeVar("T")


# --- machine -------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fsync_latency_ms(directory: str, n: int = 200) -> tuple[float, float]:
    """Median and p99 of `n` (write 100 bytes + fsync) on a file in `directory`, in ms."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ".fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    samples = []
    try:
        data = b"x" * 100
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, data)
            os.fsync(fd)
            samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(samples), percentile(samples, 99)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def idle_polling() -> str:
    """How an idle CPU waits: the cpuidle driver and, for KVM's haltpoll, its poll window.
    With `guest_halt_poll_ns` = 0 every idle vCPU halts at once and each cross-process
    wake-up pays a VM exit: round trips here depend on it more than on any code."""
    driver = _read("/sys/devices/system/cpu/cpuidle/current_driver") or "unknown"
    ns = _read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    return f"{driver} (guest_halt_poll_ns={ns})" if ns else driver


def machine_info(data_root: str | None = None) -> dict[str, Any]:
    root = data_root or tempfile.gettempdir()
    probe = tempfile.mkdtemp(prefix="jobd-bench-fsync-", dir=root)
    try:
        med, p99 = fsync_latency_ms(probe)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "fsync_dir": root,
        "fsync_ms_p50": med,
        "fsync_ms_p99": p99,
        "mem_gib": _mem_gib(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cpuidle": idle_polling(),
    }


def _mem_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024 * 1024)
    except OSError:
        pass
    return 0.0


def machine_header(info: dict[str, Any]) -> str:
    return (f"Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cpus']} usable), "
            f"{info['mem_gib']:.1f} GiB RAM, Linux {info['kernel']}, Python {info['python']}, "
            f"cpuidle {info['cpuidle']}; "
            f"fsync of 100 B on the data dir ({info['fsync_dir']}): "
            f"p50 {info['fsync_ms_p50']:.3f} ms, p99 {info['fsync_ms_p99']:.3f} ms")


# --- statistics ----------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(v: float) -> str:
    if v != v:  # nan
        return "n/a"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


@dataclass
class Row:
    """One line of the results table: a metric measured over repeats."""
    scenario: str
    params: str
    metric: str
    values: list[float] = field(default_factory=list)
    note: str = ""

    def cells(self) -> list[str]:
        if not self.values:
            return [self.scenario, self.params, self.metric, "n/a", "n/a"]
        spread = f"{fmt(min(self.values))} – {fmt(max(self.values))}" if len(self.values) > 1 else "–"
        return [self.scenario, self.params, self.metric, fmt(median(self.values)), spread]


class Rows:
    """Collects values per (scenario, params, metric) across repeats, in first-seen order."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], Row] = {}

    def add(self, scenario: str, params: str, metric: str, value: float) -> None:
        key = (scenario, params, metric)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = Row(scenario, params, metric)
        row.values.append(value)

    def extend(self, other: Rows) -> None:
        for key, row in other._rows.items():
            if key in self._rows:
                self._rows[key].values.extend(row.values)
            else:
                self._rows[key] = row

    def __iter__(self) -> Any:
        return iter(self._rows.values())


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(out)


def results_table(rows: Rows) -> str:
    return markdown_table(["scenario", "parameters", "metric", "median", "min – max"],
                          [r.cells() for r in rows])


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- a raw connection ----------------------------------------------------------------------
class Conn:
    """A blocking JSON-lines connection on a raw socket, with a pipelining-friendly reader."""

    def __init__(self, path: str, timeout: float | None = 120.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = bytearray()
        self.scratch = memoryview(bytearray(1 << 20))
        self._next_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_some(self) -> None:
        # recv_into a reused buffer: recv(4 MiB) would mmap and free 4 MiB per read.
        n = self.sock.recv_into(self.scratch)
        if not n:
            raise ConnectionError("daemon closed the connection")
        self.buf += self.scratch[:n]

    def read_lines(self) -> list[bytes]:
        """At least one complete line (blocking); returns every complete line buffered."""
        while b"\n" not in self.buf:
            self.recv_some()
        end = self.buf.rfind(b"\n") + 1
        lines = bytes(self.buf[:end]).split(b"\n")[:-1]
        del self.buf[:end]
        return lines

    def read_line(self) -> bytes:
        scanned = 0          # don't rescan what was searched already (large replies)
        while True:
            i = self.buf.find(b"\n", scanned)
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                return line
            scanned = len(self.buf)
            self.recv_some()

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        self._next_id += 1
        self.send(orjson.dumps({"op": op, "id": self._next_id, **args}) + b"\n")
        reply = orjson.loads(self.read_line())
        if not reply.get("ok"):
            raise RuntimeError(f"{op} failed: {reply.get('error')}")
        return reply


# --- the daemon ----------------------------------------------------------------------------
def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Daemon:
    """A `jobd serve` subprocess on its own temp socket and data dir.

    Use as a context manager; `stop()` sends SIGTERM and waits (SIGKILL to its process
    group after `stop_timeout`). `restart()` keeps the data dir. The log goes to a file
    in the temp dir (`log_text()`).

    `code`: the source tree the daemon runs from (its cwd and first on PYTHONPATH, with
    this interpreter): another checkout for paired runs against older code (bench/pairs.py).
    """

    def __init__(self, workers: int = 0, fsync: str = "always", handlers: str = HANDLERS,
                 config: str = "", root: str | None = None, keep: bool = False,
                 start_timeout: float = 300.0, stop_timeout: float = 60.0,
                 code: str = REPO) -> None:
        self.workers, self.fsync, self.handlers = workers, fsync, handlers
        self.config, self.code = config, code
        self.root = tempfile.mkdtemp(prefix="jobd-bench-", dir=root)
        self.socket = os.path.join(self.root, "jobd.sock")
        self.data_dir = os.path.join(self.root, "data")
        self.log_path = os.path.join(self.root, "jobd.log")
        self.keep = keep
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.ready_s = 0.0          # spawn → first successful `hello`

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        return _rss_bytes(self.pid)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "jobd", "serve", "--socket", self.socket,
               "--data-dir", self.data_dir, "--workers", str(self.workers),
               "--handlers", self.handlers, "--fsync", self.fsync, "--log-level", "info"]
        if self.config:
            path = os.path.join(self.root, "jobd.toml")
            with open(path, "w") as f:
                f.write(self.config)
            cmd[4:4] = ["--config", path]
        return cmd

    def start(self) -> Daemon:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.code + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("JOBD_CONFIG", None)
        logf = open(self.log_path, "ab")
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(self.command(), cwd=self.code, env=env, stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=logf, start_new_session=True)
        logf.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = self.spawned_at + self.start_timeout
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jobd exited with {self.proc.returncode} during startup:\n"
                                   + self.log_text()[-3000:])
            try:
                with Conn(self.socket, timeout=5.0) as c:
                    c.call("hello")
                self.ready_s = time.perf_counter() - self.spawned_at
                return
            except (OSError, ConnectionError, RuntimeError):
                if time.perf_counter() > deadline:
                    raise RuntimeError("jobd did not answer hello in time:\n"
                                       + self.log_text()[-3000:]) from None
                time.sleep(0.002)

    def stop(self, hard: bool = False) -> int | None:
        """SIGTERM (or SIGKILL with hard) and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            log(f"jobd pid {pid} did not stop within {self.stop_timeout}s of SIGTERM; killing its group")
            self.kill_group()
            self.proc.wait(10)
        if hard:
            self.kill_group()      # the workers exit on their own; make sure of it for the next run
        self.reap_adopted()
        return self.proc.returncode

    def reap_adopted(self) -> None:
        """Wait for this daemon's processes that outlived it and were handed to us (only
        after `adopt_orphans()`), so that their CPU is counted as ours (`ForeignLoad`)."""
        assert self.proc is not None
        deadline = time.monotonic() + self.stop_timeout
        for pid in _adopted(self.proc.pid):
            while not _reaped(pid):
                if time.monotonic() > deadline:
                    log(f"jobd pid {self.proc.pid}: process {pid} outlived it; killing its group")
                    self.kill_group()
                    deadline += 10
                time.sleep(0.005)

    def kill_group(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # our own session: only this daemon's processes
        except ProcessLookupError:
            pass

    def restart(self) -> Daemon:
        rc = self.stop()
        if rc not in (0, None):
            log(f"jobd exited with status {rc} on SIGTERM")
        return self.start()

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def conn(self, timeout: float | None = 120.0) -> Conn:
        return Conn(self.socket, timeout)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        try:
            rc = self.stop()
            if rc not in (0, None):
                log(f"jobd exited with status {rc} on SIGTERM; log tail:\n{self.log_text()[-2000:]}")
        finally:
            self.check_log()
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def check_log(self) -> None:
        """Report anything at WARNING or above in the daemon's log (misbehaviour under load)."""
        bad = [ln for ln in self.log_text().splitlines()
               if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", ln)]
        if bad:
            log(f"jobd (fsync={self.fsync}, workers={self.workers}) logged {len(bad)} warning/error "
                f"line(s); first: " + " | ".join(bad[:5]))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (its reaped children not counted)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def adopt_orphans() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux
    PR_SET_CHILD_SUBREAPER): a process a daemon leaves behind is then ours to wait for,
    and its CPU lands in our children's times instead of vanishing with init."""
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _adopted(session: int) -> list[int]:
    """Our children in `session`: a daemon's processes handed to us when it exited."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and int(fields[3]) == session:
            found.append(int(entry))
    return found


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts), idle


def cpu_busy(interval: float = 1.0) -> float:
    """Machine-wide CPU busy fraction (0..1) over `interval` seconds."""
    t0, i0 = _cpu_times()
    time.sleep(interval)
    t1, i1 = _cpu_times()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


class ForeignLoad:
    """CPU used by processes other than this one and its reaped children (the daemons it
    started and waited for, their workers, and what they left behind: `adopt_orphans`)
    since `start()`, as a fraction of the machine: tells a measurement disturbed by other
    work on a shared machine. Kernel threads working for us (the journal's commits on
    fsync) count as other work: a few % when fsync=always."""

    def __init__(self) -> None:
        adopt_orphans()
        self.start()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        total, idle = _cpu_times()
        tick = os.sysconf("SC_CLK_TCK")
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return (total - idle) / tick, own, time.monotonic()

    def start(self) -> None:
        self._busy, self._own, self._t = self._now()

    def fraction(self) -> float:
        busy, own, t = self._now()
        cpus = len(os.sched_getaffinity(0))
        return max(0.0, (busy - self._busy) - (own - self._own)) / max(1e-9, (t - self._t) * cpus)


def wait_for_quiet(limit: float = 0.15, max_wait: float = 120.0) -> float:
    """Wait until the machine is less than `limit` busy over one second (other work on a
    shared machine skews results); gives up after `max_wait` s. Returns the last busy fraction."""
    deadline = time.perf_counter() + max_wait
    busy = cpu_busy()
    while busy > limit and time.perf_counter() < deadline:
        busy = cpu_busy()
    return busy


@dataclass
class Undisturbed:
    """Runs measurements on a quiet machine (`run`) and keeps what it saw: other
    processes' share of the machine during each measurement kept, and how many it redid."""
    shares: list[float] = field(default_factory=list)
    redone: int = 0

    def summary(self) -> str:
        if not self.shares:
            return "n/a"
        return (f"median {median(self.shares) * 100:.1f}%, max {max(self.shares) * 100:.1f}% "
                f"over {len(self.shares)} measurements; {self.redone} redone for more than "
                f"{FOREIGN_LIMIT * 100:.0f}%")

    def run(self, measure: Callable[[], T], what: str, quiet_wait: float = 60.0, tries: int = 3) -> T:
        """`measure()` once the machine is quiet (up to `quiet_wait` s), redone (up to
        `tries` in all) when other processes took more than FOREIGN_LIMIT of the machine
        meanwhile: a shared machine's other work skews one side of a comparison."""
        for attempt in range(tries):
            if quiet_wait > 0:
                wait_for_quiet(max_wait=quiet_wait)
            load = ForeignLoad()
            result = measure()
            share = load.fraction()
            if share <= FOREIGN_LIMIT or attempt == tries - 1:
                self.shares.append(share)
                return result
            self.redone += 1
            log(f"{what}: other processes took {share * 100:.0f}% of the machine meanwhile; redoing it")
        raise AssertionError("unreachable")


def wait_until(pred: Callable[[], bool], timeout: float, every: float = 0.01) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()


# --- command line --------------------------------------------------------------------------
def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small N and 1 repeat: a fast smoke run")
    p.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 3, quick 1)")
    p.add_argument("--data-root", default=None, help="where to create temp data dirs (default $TMPDIR)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="scenarios that redo a disturbed measurement wait up to this many seconds "
                        "for the machine to be idle before each (default 60)")
    a = p.parse_args(argv)
    if a.repeats is None:
        a.repeats = 1 if a.quick else 3
    return a


def standalone(description: str, run: Callable[[argparse.Namespace], Rows],
               argv: list[str] | None = None) -> None:
    """`python -m bench.X`: run one scenario and print its table with the machine header."""
    args = parse_args(description, argv)
    info = machine_info(args.data_root)
    rows = run(args)
    print(machine_header(info))
    print(f"Repeats: {args.repeats}{' (quick)' if args.quick else ''}\n")
    print(results_table(rows))
