"""jobd-cli against a real daemon (docs/cli.md).

Most commands run in-process through `main(argv)` with captured output; the
entry point, exit statuses, `watch` (Ctrl-C) and the terminal-only views
(`wait`'s progress bar, `top`) run as real subprocesses, the latter under a
pseudo-terminal. Every wait is on a condition with a deadline.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SUPPORT, DaemonProc, T, wait_until

from jobd.cli import main
from jobd.cli.app import json_arg
from jobd.cli.commands import job_table
from jobd.cli.progress import bar_line
from jobd.cli.tables import Column, table
from jobd_client import Client, Job

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CLI = [sys.executable, "-m", "jobd.cli"]
ID_RE = re.compile(r"\b[0-9a-f]{32}\b")


# --- helpers ---------------------------------------------------------------------------------

class Run:
    """The outcome of one in-process CLI run."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli(daemon: DaemonProc, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """`cli("status", id)` runs `jobd-cli --socket <daemon> status <id>` in-process."""
    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(["--socket", daemon.socket, *argv])
        out, err = capsys.readouterr()
        return Run(code, out, err)
    return run


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), str(ROOT), env.get("PYTHONPATH", "")])
    for key in ("JOBD_SOCKET", "COLUMNS", "LINES"):
        env.pop(key, None)
    return env


def job_status(client: Client, job_id: str) -> str | None:
    return client.status(job_id).status


class LineReader:
    """Reads a pipe on a thread so tests can wait for a line with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lines: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self.lines.put(line)

    def expect(self, pred: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching line within {timeout}s; saw {seen!r}") from None
            seen.append(line)
            if pred(line):
                return line

    def close(self) -> None:
        self.thread.join(15)  # the writer has exited, so the pipe is at EOF
        self.stream.close()


@contextlib.contextmanager
def cli_process(*argv: str) -> Iterator[tuple[subprocess.Popen[str], LineReader, LineReader]]:
    """jobd-cli as a subprocess with line readers on stdout and stderr; killed at the end."""
    proc = subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env())
    out, err = LineReader(proc.stdout), LineReader(proc.stderr)
    try:
        yield proc, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out.close()
        err.close()


class Pty:
    """A subprocess on a pseudo-terminal of a known size; `expect` reads the screen text."""

    def __init__(self, argv: list[str], cols: int = 100, rows: int = 30) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.slave_attrs = termios.tcgetattr(slave)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     env=cli_env(), start_new_session=True)
        self.slave = slave  # kept open to read the terminal modes the child leaves behind
        self.raw = ""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def _read(self, timeout: float) -> int:
        """Read what is there within `timeout`; the number of bytes, -1 once the child is gone."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return 0
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave end is closed
            return -1
        self.raw += data.decode(errors="replace")
        return len(data) or -1

    def expect(self, pred: Callable[[str], bool], timeout: float = 15.0, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        while not pred(self.text):
            left = deadline - time.monotonic()
            if left <= 0 or (self._read(min(left, 0.2)) < 0 and not pred(self.text)):
                raise AssertionError(f"screen never showed {what}: {self.text[-2000:]!r}")
        return self.text

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 15.0) -> int:
        """Drain output until the child exits; returns its exit status."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0) > 0:  # whatever is left in the buffer
            pass
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)



# --- pure formatting ---------------------------------------------------------------------------

def test_submit_args_are_json_when_valid_else_strings() -> None:
    assert json_arg("1") == 1
    assert json_arg('{"a": [1, 2]}') == {"a": [1, 2]}
    assert json_arg("true") is True
    assert json_arg("hello") == "hello"
    assert json_arg("NaN") == "NaN"        # not JSON the daemon could store


def test_tables_shrink_the_flexible_column_never_ids() -> None:
    jobs = [{"id": "a" * 32, "status": "dead_letter", "priority": 1000, "attempts": 12,
             "handler": "some.very.long.package.name.module.function_name",
             "created_at": "2026-01-02T03:04:05.000000Z"}]
    lines = job_table(jobs, 80)
    assert all(len(line) <= 80 for line in lines)
    assert "a" * 32 in lines[1] and "function_name" in lines[1]
    lines = table([Column("A"), Column("B", flex=True)], [("x" * 10, "y" * 100)], 40)
    assert len(lines[1]) == 40


def test_progress_line_shows_bar_percentage_message_and_elapsed() -> None:
    job = Job(status="running", started_at="2026-01-01T00:00:00Z",
              progress={"current": 3, "total": 10, "percentage": 30.0, "message": "resizing"})
    line = bar_line(job, 75.0, 80)
    assert "30%" in line and "3/10 resizing" in line and "1:15" in line
    assert line.count("█") == 9 and len(line) < 80


# --- commands through a real daemon ---------------------------------------------------------------

def test_ping_human_json_and_socket_from_environment(cli: Callable[..., Run], daemon: DaemonProc,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = cli("ping")
    assert run.code == 0 and "jobd 0.1.0" in run.out and "protocol 1" in run.out
    hello = cli("--json", "ping").json()
    assert hello["protocol"] == 1 and T + "add" in hello["handlers"]
    assert f"{len(hello['handlers'])} handler(s)" in run.out
    monkeypatch.setenv("JOBD_SOCKET", daemon.socket)
    capsys.readouterr()
    assert main(["ping"]) == 0
    assert daemon.socket in capsys.readouterr().out


def test_submit_options_reach_the_job_view(cli: Callable[..., Run]) -> None:
    run = cli("--json", "submit", T + "echo", "1", "hello", '{"a": 1}', '"2"',
              "--kwargs", '{"k": true}', "--priority", "high", "--tag", "team=ops",
              "--tag", "env=dev", "--name", "n1", "--max-retries", "0", "--timeout", "30")
    assert run.code == 0, run
    job_id = run.json()["job_id"]
    view = cli("status", job_id, "--json").json()   # --json also accepted after the command
    assert view["args"] == [1, "hello", {"a": 1}, "2"] and view["kwargs"] == {"k": True}
    assert view["priority"] == 20 and view["tags"] == {"team": "ops", "env": "dev"}
    assert view["name"] == "n1" and view["max_retries"] == 0 and view["timeout"] == 30
    run = cli("wait", job_id)
    assert run.code == 0 and '"hello"' in run.out


def test_submit_wait_prints_the_result_and_fails_for_failed_jobs(cli: Callable[..., Run]) -> None:
    run = cli("submit", T + "add", "2", "3", "--wait")
    lines = run.out.splitlines()
    assert run.code == 0 and ID_RE.fullmatch(lines[0]) and lines[-1] == "5"
    run = cli("submit", T + "permanent", "nope", "--wait")
    assert run.code == 1 and "failed: PermanentError: nope" in run.err
    run = cli("--json", "submit", T + "add", "1", "1", "--wait")
    assert run.code == 0 and run.json()["result"] == 2 and run.json()["status"] == "completed"


def test_delay_after_status_result_and_cancel(cli: Callable[..., Run], client: Client) -> None:
    first = cli("submit", T + "noop", "--delay", "600").out.strip()
    second = cli("submit", T + "noop", "--after", first).out.strip()
    assert job_status(client, first) == "scheduled"
    view = cli("--json", "status", second).json()
    assert view["status"] == "waiting" and view["depends_on"] == [first]
    run = cli("status", second)
    assert re.search(r"^status\s+waiting$", run.out, re.M)
    assert re.search(rf"^depends_on\s+{first}$", run.out, re.M)
    run = cli("wait", first, "--timeout", "0.2")
    assert run.code == 1 and "timeout" in run.err and "scheduled" in run.err
    assert cli("cancel", first).out.strip() == f"cancelled {first}"
    assert cli("--json", "cancel", first).json() == {"cancelled": False, "status": "cancelled"}
    wait_until(lambda: job_status(client, second) == "failed", what="dependent to fail")
    run = cli("result", second)
    assert re.search(r"^status\s+failed$", run.out, re.M) and run.code == 0
    assert cli("--json", "result", second).json()["result"] is None


def test_cancel_running_job_needs_force(cli: Callable[..., Run], client: Client,
                                        tmp_path: Path) -> None:
    started = tmp_path / "started"
    job_id = client.submit(T + "block", args=[str(started)])
    wait_until(started.exists, what="block to start")
    run = cli("cancel", job_id)
    assert run.code == 0 and "cancel requested" in run.out
    run = cli("cancel", job_id, "--force")
    assert run.out.strip() == f"cancelled {job_id}"
    assert job_status(client, job_id) == "cancelled"


def test_list_fits_80_columns_with_full_ids_and_filters(cli: Callable[..., Run],
                                                        client: Client) -> None:
    ids = [client.submit(T + "progress_steps", args=["/nonexistent", 1], delay=600,
                         tags={"batch": str(i % 2)}) for i in range(4)]
    other = client.submit(T + "noop", delay=600)
    run = cli("list")
    lines = run.out.splitlines()
    assert run.code == 0 and all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["ID", "STATUS", "PRI", "ATT", "HANDLER", "CREATED"]
    assert [ID_RE.search(line).group() for line in lines[1:6]] == [*ids, other]  # type: ignore[union-attr]
    assert lines[-1] == "5 job(s)"
    page = cli("--json", "list", "--handler", T + "progress_steps", "--tag", "batch=1").json()
    assert page["total"] == 2 and [j["id"] for j in page["jobs"]] == [ids[1], ids[3]]
    run = cli("list", "--status", "scheduled", "--limit", "2", "--offset", "1")
    assert ids[1] in run.out and ids[2] in run.out and ids[0] not in run.out
    assert "jobs 2-3 of 5" in run.out
    assert cli("list", "--status", "running").out.strip() == "no jobs"


def test_dead_retry_and_purge(cli: Callable[..., Run], client: Client) -> None:
    job_id = cli("submit", T + "always_fail", '"kaput"', "--max-retries", "0").out.strip()
    wait_until(lambda: job_status(client, job_id) == "dead_letter", what="dead letter")
    run = cli("dead")
    assert job_id in run.out and "RuntimeError" in run.out and "1 job(s)" in run.out
    assert all(len(line) <= 80 for line in run.out.splitlines())
    page = cli("--json", "dead").json()
    assert page["total"] == 1 and page["jobs"][0]["error"].startswith("RuntimeError: kaput")
    run = cli("retry", job_id)
    assert run.code == 0 and run.out.strip() == f"{job_id} is pending again"
    wait_until(lambda: client.status(job_id).status == "dead_letter", what="dead letter again")
    assert cli("--json", "purge", "--status", "completed").json() == {"purged": 0}
    assert cli("purge", "--status", "dead_letter").out.strip() == "purged 1 job(s)"
    assert cli("status", job_id).code == 1


def test_metrics_human_json_and_prometheus(cli: Callable[..., Run], client: Client) -> None:
    client.wait(client.submit(T + "noop"), timeout=10)
    run = cli("metrics")
    assert run.code == 0 and "pending 0" in run.out and "completed 1" in run.out
    assert "throughput" in run.out and "2 total" in run.out
    metrics = cli("--json", "metrics").json()["metrics"]
    assert metrics["queue"]["completed"] == 1 and "1m" in metrics["throughput"]
    text = cli("metrics", "--prometheus").out
    assert "# TYPE jobd_jobs_submitted_total counter" in text
    assert "jobd_workers_total 2" in cli("--json", "metrics", "--prometheus").json()["text"]


def test_workers_and_scale(cli: Callable[..., Run], client: Client) -> None:
    run = cli("workers")
    lines = run.out.splitlines()
    assert lines[0].split() == ["ID", "PID", "STATUS", "JOB", "DONE/FAIL", "RSS", "MB", "HEALTHY"]
    assert len(lines) == 4 and lines[-1] == "2 worker(s)" and all(len(x) <= 80 for x in lines)
    assert [w["id"] for w in cli("--json", "workers").json()["workers"]] == [1, 2]
    assert cli("scale", "3").out.strip() == "workers: 2 -> 3"
    wait_until(lambda: len(client.workers()) == 3, what="a third worker")
    assert cli("--json", "scale", "2").json() == {"previous": 3, "target": 2}


def test_top_once_and_json(cli: Callable[..., Run], client: Client) -> None:
    client.submit(T + "noop", delay=600)
    failed = client.submit(T + "permanent", args=["bad input"])
    client.wait(failed, timeout=10)
    run = cli("top", "--once")
    assert run.code == 0 and "scheduled" in run.out and "RECENT FAILURES" in run.out
    assert failed in run.out and "PermanentError" in run.out
    assert re.search(r"^\s+1 +\d+ (idle|busy) ", run.out, re.M)
    snap = cli("--json", "top").json()
    assert snap["metrics"]["queue"]["scheduled"] == 1 and len(snap["workers"]) == 2
    assert [j["id"] for j in snap["recent_failures"]] == [failed]


# --- exit statuses and the real entry point --------------------------------------------------------

def test_exit_statuses(daemon: DaemonProc, tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *argv], capture_output=True, text=True, env=cli_env(),
                              timeout=30)
    ok = run("--socket", daemon.socket, "submit", T + "add", "1", "2", "--wait")
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1] == "3"
    missing = str(tmp_path / "nowhere.sock")
    down = run("--socket", missing, "ping")
    assert down.returncode == 3 and missing in down.stderr
    assert run("--socket", missing, "--json", "list").returncode == 3
    usage = run("--socket", daemon.socket, "submit", T + "add", "--priority", "urgent")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    assert run("--socket", daemon.socket).returncode == 2                     # no command
    err = run("--socket", daemon.socket, "status", "0" * 32)
    assert err.returncode == 1 and err.stderr.startswith("error: not_found: ")
    err = run("--socket", daemon.socket, "submit", "no.such.handler")
    assert err.returncode == 1 and "error: unknown_handler: " in err.stderr


def test_watch_prints_event_lines_and_stops_on_ctrl_c(daemon: DaemonProc, client: Client) -> None:
    with cli_process("--socket", daemon.socket, "watch") as (proc, out, err):
        err.expect(lambda line: "watching" in line)
        job_id = client.submit(T + "add", args=[1, 2])
        line = out.expect(lambda line: "job.submitted" in line)
        assert job_id in line and f"handler={T}add" in line
        line = out.expect(lambda line: "job.completed" in line)
        assert job_id in line and "duration=" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0


def test_watch_json_one_job_with_event_filter(daemon: DaemonProc, client: Client) -> None:
    job_id = client.submit(T + "noop", delay=600)
    argv = ("--socket", daemon.socket, "--json", "watch", job_id, "--events", "job.cancelled")
    with cli_process(*argv) as (proc, out, err):
        err.expect(lambda line: "watching" in line)
        client.submit(T + "noop")       # another job's events are not shown
        client.cancel(job_id)
        event = json.loads(out.expect(lambda line: True))
        assert event["event"] == "job.cancelled" and event["data"]["job_id"] == job_id
        assert proc.wait(15) == 1       # with an ID, watch ends with the job: cancelled is not 0


def test_watch_with_an_id_ends_with_the_job_and_waits_exit_status(daemon: DaemonProc,
                                                                    client: Client,
                                                                    tmp_path: Path) -> None:
    go = tmp_path / "go"
    job_id = client.submit(T + "progress_steps", args=[str(go), 2])
    argv = ("--socket", daemon.socket, "watch", job_id, "--events", "job.completed")
    with cli_process(*argv) as (proc, out, err):
        err.expect(lambda line: "watching" in line)
        go.touch()
        line = out.expect(lambda line: True)
        assert proc.wait(15) == 0
    # --events chose what was printed, not what was read: the end was still seen
    assert "job.completed" in line and job_id in line and out.lines.empty()

    run = subprocess.run([*CLI, "--socket", daemon.socket, "watch", job_id], capture_output=True,
                         text=True, env=cli_env(), timeout=30)
    assert run.returncode == 0 and run.stdout == ""        # ended before: nothing to wait for


def test_watch_with_an_id_shows_a_dead_letter_to_its_last_event_and_exits_1(
        daemon: DaemonProc, client: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    first = client.submit(T + "wait_file", args=[str(go)])
    job_id = client.submit(T + "always_fail", args=["kaput"], depends_on=[first], max_retries=0)
    with cli_process("--socket", daemon.socket, "watch", job_id) as (proc, out, err):
        err.expect(lambda line: "watching" in line)
        go.touch()
        assert proc.wait(15) == 1
        out.expect(lambda line: "job.started" in line)
        out.expect(lambda line: "job.failed" in line and "will_retry=false" in line)
        out.expect(lambda line: "job.dead_letter" in line)
        err.expect(lambda line: f"job {job_id} dead_letter: RuntimeError: kaput" in line)


def test_wait_for_several_jobs_reports_each_as_it_ends(daemon: DaemonProc, client: Client,
                                                       tmp_path: Path) -> None:
    go = tmp_path / "go"
    slow = client.submit(T + "wait_file", args=[str(go)])
    quick = client.submit(T + "add", args=[1, 2])
    with cli_process("--socket", daemon.socket, "wait", slow, quick) as (proc, out, _):
        first = out.expect(lambda line: True)
        assert first.split()[:3] == [quick, "completed", "3"]     # the one that ended first
        go.touch()
        assert out.expect(lambda line: True).split()[:3] == [slow, "completed", '"released"']
        assert proc.wait(15) == 0


def test_wait_for_several_jobs_fails_unless_all_completed(cli: Callable[..., Run],
                                                          client: Client) -> None:
    done = client.submit(T + "add", args=[2, 2])
    failed = client.submit(T + "permanent", args=["bad input"])
    later = client.submit(T + "noop", delay=600)
    client.wait(failed, timeout=10)
    run = cli("wait", done, failed)
    assert run.code == 1 and "1 of 2 jobs did not complete" in run.err
    assert sorted(line.split()[1] for line in run.out.splitlines()) == ["completed", "failed"]
    assert f"{failed} failed      PermanentError: bad input" in run.out
    run = cli("wait", done, later, "--timeout", "0.3")
    assert run.code == 1 and "timeout: 1 of 2 jobs had not ended after 0.3s" in run.err
    assert run.out.splitlines()[-1].split() == [later, "scheduled"]
    run = cli("wait", later, done, "--timeout", "0")       # no time to wait: still a report
    assert [line.split()[:2] for line in run.out.splitlines()] == \
        [[done, "completed"], [later, "scheduled"]]
    run = cli("--json", "wait", later, done, done, "--timeout", "0.2")
    assert run.code == 1 and run.err == ""
    assert [(j["job_id"], j["status"]) for j in run.json()["jobs"]] == \
        [(later, "scheduled"), (done, "completed")]
    assert cli("wait", done, "0" * 32).code == 1


def test_schedule_add_says_when_it_will_run(cli: Callable[..., Run]) -> None:
    run = cli("schedule", "add", "nightly", "0 3 * * * *", T + "noop")
    assert run.code == 0 and "schedule nightly: at minute 3 of every hour (0 3 * * * *, UTC)" in run.out
    run = cli("schedule", "add", "nightly", "0 3 * * *", T + "noop")
    assert "schedule nightly: at 03:00 every day (0 3 * * *, UTC); next run " in run.out


# --- terminal views under a pseudo-terminal -----------------------------------------------------------

def test_wait_draws_a_progress_bar_on_a_terminal(daemon: DaemonProc, client: Client,
                                                 tmp_path: Path) -> None:
    go = tmp_path / "go"
    job_id = client.submit(T + "progress_steps", args=[str(go), 4])
    term = Pty([*CLI, "--socket", daemon.socket, "wait", job_id, "--timeout", "30"])
    try:
        screen = term.expect(lambda s: "25%" in s and "1/4 started" in s, what="the 25% bar")
        assert "running" in screen and "█" * 2 in screen and "\r" in term.raw
        go.touch()
        assert term.finish() == 0
        assert "100%" in term.text and "4/4 done" in term.text
        assert term.text.rstrip().splitlines()[-1].strip() == "4"
    finally:
        term.close()


def test_top_dashboard_redraws_in_place_and_quits_on_q(make_daemon: Callable[..., DaemonProc],
                                                        tmp_path: Path) -> None:
    daemon = make_daemon(workers=1)
    client = daemon.client()
    started = tmp_path / "started"
    blocker = client.submit(T + "block", args=[str(started)])
    wait_until(started.exists, what="the worker to be busy")
    for _ in range(3):
        client.submit(T + "noop")
    term = Pty([*CLI, "--socket", daemon.socket, "top", "--interval", "0.2"], cols=100, rows=30)
    try:
        def shows_queue(screen: str) -> bool:
            return (re.search(r"scheduled\s+waiting\s+pending", screen) is not None
                    and re.search(r"\n\s+0\s+0\s+3\s+1\s+0", screen) is not None
                    and re.search(rf"1\s+\d+\s+busy\s+{blocker}", screen) is not None)
        term.expect(shows_queue, what="3 pending, 1 running and a busy worker row")
        assert "\x1b[?1049h" in term.raw and "\x1b[H" in term.raw
        frames = term.raw.count("\x1b[H")
        term.expect(lambda _: term.raw.count("\x1b[H") > frames, what="a redraw")
        term.send(b"q")
        assert term.finish() == 0
        assert term.raw.rstrip().endswith("\x1b[?1049l")   # left the alternate screen last
        assert termios.tcgetattr(term.slave) == term.slave_attrs  # cbreak undone
    finally:
        term.close()
        client.cancel(blocker, force=True)
