"""jobd-cli polish without a daemon: handler names in tables, timestamps, cron
expressions in words, `--json` errors, and the commands over ops that are
newer than the daemon on this branch (`logs`, `reload`, `handlers`).

Those three talk to `FakeDaemon`: a Unix socket served by a thread that
answers each request line from a script of replies per op and records what
it was asked (and when), so a test reads exactly what the CLI sent.
"""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from jobd.cli import logs as cli_logs
from jobd.cli import main
from jobd.cli.commands import job_table
from jobd.cli.cronwords import describe
from jobd.cli.schedules import added_line, schedule_table
from jobd.cli.tables import short_time

Reply = dict[str, Any]


# --- a fake daemon ---------------------------------------------------------------------------

class FakeDaemon:
    """Answers JSON lines on `path`: `script[op]` is the list of reply bodies for
    that op, used in order (the last one again once the list runs out); a body
    `{"fail": {code, message}}` becomes an `ok: false` reply with that error."""

    def __init__(self, path: str, script: dict[str, list[Reply]]) -> None:
        self.path, self.script = path, script
        self.asked: list[tuple[float, dict[str, Any]]] = []     # (monotonic time, request)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def requests(self, op: str) -> list[dict[str, Any]]:
        return [request for _, request in self.asked if request.get("op") == op]

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:          # closed: the test is over
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                request = json.loads(line)
                self.asked.append((time.monotonic(), request))
                conn.sendall(json.dumps(self._reply(request)).encode() + b"\n")

    def _reply(self, request: dict[str, Any]) -> Reply:
        bodies = self.script.get(request["op"])
        if not bodies:
            return {"id": request["id"], "ok": False,
                    "error": {"code": "unknown_op", "message": request["op"]}}
        body = bodies.pop(0) if len(bodies) > 1 else bodies[0]
        if "fail" in body:
            return {"id": request["id"], "ok": False, "error": body["fail"]}
        return {"id": request["id"], "ok": True, **body}

    def close(self) -> None:
        self.listener.close()


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def fake(tmp_path: Path, capsys: pytest.CaptureFixture[str]
         ) -> Iterator[Callable[..., tuple[FakeDaemon, Callable[..., Run]]]]:
    """`daemon, cli = fake(logs=[...], reload=[...])`; `cli("logs", id)` runs jobd-cli on it."""
    made: list[FakeDaemon] = []

    def make(**script: list[Reply]) -> tuple[FakeDaemon, Callable[..., Run]]:
        daemon = FakeDaemon(str(tmp_path / f"fake{len(made)}.sock"), script)
        made.append(daemon)

        def cli(*argv: str) -> Run:
            capsys.readouterr()
            code = main(["--socket", daemon.path, *argv])
            out, err = capsys.readouterr()
            return Run(code, out, err)
        return daemon, cli
    yield make
    for daemon in made:
        daemon.close()


@contextlib.contextmanager
def local_zone(monkeypatch: pytest.MonkeyPatch, zone: str) -> Iterator[None]:
    """Run with the process's local time zone set to `zone`."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


# --- handler names in tables ------------------------------------------------------------------

LONG = "myapp.tasks.reports.build_monthly"


def words_of(name: str) -> set[str]:
    return set(name.split("."))


def test_list_shortens_the_module_path_never_the_function_name() -> None:
    jobs = [{"id": f"{i:032x}", "status": "dead_letter", "priority": 1000, "attempts": 12,
             "handler": name, "created_at": "2026-01-02T03:04:05.000000Z"}
            for i, name in enumerate((LONG, "other.pkg.sub.mod.resize_images", "send_email"))]
    for width in (120, 90, 80):
        lines = job_table(jobs, width, "…")
        cells = [line.split()[4] for line in lines[1:]]
        assert all(len(line) <= width for line in lines), (width, lines)
        assert cells[2] == "send_email"
        for cell, job in zip(cells, jobs, strict=True):
            # each dotted part shown is a whole part or its initial: never a cut word
            full = job["handler"].split(".")
            shown = cell.lstrip("…").split(".")
            assert shown[-1] == full[-1], cell
            assert all(part in full or (len(part) == 1 and any(p[0] == part for p in full))
                       for part in shown), cell
    assert job_table(jobs, 90, "…")[1].split()[4] == "m.t.r.build_monthly"
    assert job_table(jobs, 80, "…")[1].split()[4] == "…build_monthly"
    # too narrow for even that: the line overflows rather than cut the function's name
    assert job_table(jobs, 70, "…")[2].split()[4] == "…resize_images"


def test_shortened_forms_keep_initials_then_drop_from_the_left() -> None:
    rows = [{"name": "n", "cron": "@daily", "timezone": "UTC", "handler": LONG,
             "next_run": None, "last_run": None, "last_job_id": None}]
    def cell(width: int) -> str:
        return schedule_table(rows, width, "…")[1].split()[3]
    assert cell(200) == LONG                     # the other columns take 43 of the width
    assert cell(71) == "m.t.reports.build_monthly"
    assert cell(65) == "m.t.r.build_monthly"
    assert cell(61) == "…t.r.build_monthly"
    assert cell(59) == "…r.build_monthly"
    assert cell(40) == "…build_monthly"          # the floor: the function name stays whole


# --- timestamps -------------------------------------------------------------------------------

def test_table_times_are_local_time_of_day_today_and_dated_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with local_zone(monkeypatch, "America/New_York"):
        now = datetime.fromisoformat("2026-03-10T23:30:00-04:00")   # 03:30 UTC on the 11th
        # 02:00 UTC on the 11th is still the 10th in New York: today, shown as a time
        assert short_time("2026-03-11T02:00:00Z", now) == "22:00:00"
        assert short_time("2026-03-09T12:00:00Z", now) == "03-09 08:00"
        # another year says which: "12-31" alone would read as this December
        assert short_time("2025-12-31T12:00:00Z", now) == "2025-12-31 07:00"
        assert short_time("2027-01-01T05:00:00Z", now) == "2027-01-01 00:00"
        assert short_time(None, now) == "-"


# --- cron in words ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "words"), [
    ("0 3 * * *", "at 03:00 every day"),
    ("0 3 * * * *", "at minute 3 of every hour"),          # the six-field typo, made visible
    ("0 0 3 * * *", "at 03:00 every day"),
    ("*/10 * * * * *", "every 10 seconds"),
    ("* * * * * *", "every second"),
    ("* * * * *", "every minute"),
    ("*/5 * * * *", "every 5 minutes"),
    ("3 * * * *", "at minute 3 of every hour"),
    ("30 2 * * 1-5", "at 02:30 on Monday to Friday"),
    ("0 9,17 * * mon-fri", "at 09:00 and 17:00 on Monday to Friday"),
    ("*/15 9-17 * * 1-5", "every 15 minutes from 09:00 to 17:59, on Monday to Friday"),
    ("0 */2 * * *", "at minute 0 of every 2 hours"),
    ("0 0 1,15 * *", "at 00:00 on days 1 and 15 of every month"),
    ("0 0 1 * 1", "at 00:00 on day 1 of every month or on Monday"),   # cron's OR of the day fields
    ("0 8 * * sat,sun", "at 08:00 on Saturday and Sunday"),
    ("0 0 * jun-aug *", "at 00:00 every day in June to August"),
    ("30 30 3 * * *", "at 03:30:30 every day"),
    ("@daily", "at 00:00 every day"),
    ("@hourly", "at minute 0 of every hour"),
    ("@weekly", "at 00:00 on Sunday"),
    ("@monthly", "at 00:00 on day 1 of every month"),
    ("@yearly", "at 00:00 on 1 January"),
])
def test_cron_expressions_in_words(expr: str, words: str) -> None:
    assert describe(expr) == words


def test_exotic_cron_shapes_fall_back_to_the_named_fields() -> None:
    assert describe("1-10/3 4,7 * * *") == \
        "minute 1-10/3, hour 4,7, day-of-month *, month *, day-of-week *"
    assert describe("5/15 * * * * *").startswith("second 5/15, minute *, ")


def test_schedule_add_echoes_the_expression_in_words() -> None:
    line = added_line({"name": "nightly", "cron": "0 3 * * * *", "timezone": "UTC",
                       "next_run": "2026-01-01T00:03:00Z"})
    assert line == ("schedule nightly: at minute 3 of every hour (0 3 * * * *, UTC); "
                    "next run 2026-01-01T00:03:00Z")


# --- --json errors ---------------------------------------------------------------------------------

def test_json_errors_go_to_stdout_with_the_usual_exit_statuses(
        fake: Callable[..., tuple[FakeDaemon, Callable[..., Run]]],
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, cli = fake(status=[{"fail": {"code": "not_found", "message": "no job with id 'x'"}}])
    run = cli("--json", "status", "x")
    assert run.code == 1 and run.err == ""
    assert json.loads(run.out) == {"ok": False, "error": {"code": "not_found",
                                                          "message": "no job with id 'x'"}}
    run = cli("status", "x")                               # without --json: unchanged
    assert run.code == 1 and run.out == "" and run.err == "error: not_found: no job with id 'x'\n"

    capsys.readouterr()
    assert main(["--socket", str(tmp_path / "none.sock"), "ping", "--json"]) == 3
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)["error"]["code"] == "daemon_unavailable"
    assert str(tmp_path / "none.sock") in json.loads(out)["error"]["message"]

    assert main(["--json", "list", "--limit", "many"]) == 2
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out) == {"ok": False, "error": {
        "code": "usage", "message": "argument --limit: 'many' is not a whole number >= 0"}}
    assert main(["list", "--limit", "many"]) == 2          # without --json: argparse's text
    out, err = capsys.readouterr()
    assert out == "" and "usage: jobd-cli list" in err and "error: argument --limit" in err


# --- logs --------------------------------------------------------------------------------------------

def test_logs_prints_the_captured_output(
        fake: Callable[..., tuple[FakeDaemon, Callable[..., Run]]]) -> None:
    daemon, cli = fake(logs=[{"text": "step 1\nstep 2\n", "offset": 14, "truncated": False,
                              "complete": True}])
    run = cli("logs", "j1")
    assert run.code == 0 and run.out == "step 1\nstep 2\n" and run.err == ""
    assert daemon.requests("logs")[0] == {"op": "logs", "id": 1, "job_id": "j1", "offset": 0}
    run = cli("--json", "logs", "j1")
    assert json.loads(run.out) == {"text": "step 1\nstep 2\n", "offset": 14, "truncated": False,
                                   "complete": True}


def test_logs_of_a_running_job_reads_on_until_nothing_new_and_says_what_was_dropped(
        fake: Callable[..., tuple[FakeDaemon, Callable[..., Run]]]) -> None:
    daemon, cli = fake(logs=[
        {"text": "late 1\n", "offset": 900, "truncated": True, "complete": False},
        {"text": "late 2\n", "offset": 907, "truncated": False, "complete": False},
        {"text": "", "offset": 907, "truncated": False, "complete": False},
    ])
    run = cli("logs", "j1")
    assert run.code == 0 and run.out == "late 1\nlate 2\n"
    assert "earlier output of this job was dropped" in run.err
    assert [r["offset"] for r in daemon.requests("logs")] == [0, 900, 907]


def test_logs_follow_continues_from_each_offset_until_complete_and_pauses_when_idle(
        fake: Callable[..., tuple[FakeDaemon, Callable[..., Run]]]) -> None:
    daemon, cli = fake(logs=[
        {"text": "a\n", "offset": 2, "truncated": False, "complete": False},
        {"text": "", "offset": 2, "truncated": False, "complete": False},
        {"text": "", "offset": 2, "truncated": False, "complete": False},
        {"text": "b\n", "offset": 4, "truncated": False, "complete": False},
        {"text": "", "offset": 4, "truncated": False, "complete": True},
    ])
    run = cli("logs", "j1", "--follow")
    assert run.code == 0 and run.out == "a\nb\n"
    asked = [(t, r) for t, r in daemon.asked if r["op"] == "logs"]
    assert [r["offset"] for _, r in asked] == [0, 2, 2, 2, 4]
    # after a poll that found nothing the next one waits: no busy loop
    for (before, _), (after, _) in zip(asked[1:3], asked[2:4], strict=True):
        assert after - before >= cli_logs.FOLLOW_POLL_S


def test_logs_follow_json_prints_a_line_per_chunk(
        fake: Callable[..., tuple[FakeDaemon, Callable[..., Run]]]) -> None:
    _, cli = fake(logs=[
        {"text": "a\n", "offset": 2, "truncated": False, "complete": False},
        {"text": "b", "offset": 3, "truncated": False, "complete": True},
    ])
    run = cli("--json", "logs", "j1", "-f")
    assert [json.loads(line)["text"] for line in run.out.splitlines()] == ["a\n", "b"]


# --- reload -------------------------------------------------------------------------------------------

def test_reload_prints_what_was_added_and_removed(
        fake: Callable[..., tuple[FakeDaemon, Callable[..., Run]]]) -> None:
    _, cli = fake(reload=[
        {"reloaded": True, "handlers_added": ["app.tasks.new_b", "app.tasks.new_a"],
         "handlers_removed": ["app.tasks.old"], "error": None},
        {"reloaded": True, "handlers_added": [], "handlers_removed": [], "error": None},
    ])
    run = cli("reload")
    assert run.code == 0
    assert run.out.splitlines()[:4] == ["reloaded: 2 handler(s) added, 1 removed",
                                        "+ app.tasks.new_a", "+ app.tasks.new_b", "- app.tasks.old"]
    assert "held" in run.out.splitlines()[4]
    run = cli("reload")
    assert run.code == 0 and run.out == "reloaded: the new code registers the same handlers\n"


def test_reload_that_did_not_load_exits_1_with_the_reason(
        fake: Callable[..., tuple[FakeDaemon, Callable[..., Run]]]) -> None:
    body = {"reloaded": False, "handlers_added": [], "handlers_removed": [],
            "error": "ModuleNotFoundError: No module named 'app.helpers' (app/tasks.py, line 3)"}
    daemon, cli = fake(reload=[body])
    run = cli("reload")
    assert run.code == 1 and run.out == ""
    assert "not reloaded: ModuleNotFoundError: No module named 'app.helpers'" in run.err
    assert "keeps serving" in run.err
    run = cli("--json", "reload")
    assert run.code == 1 and json.loads(run.out) == body
    assert daemon.requests("reload")[0] == {"op": "reload", "id": 1}


# --- handlers -----------------------------------------------------------------------------------------

HANDLERS = [
    {"name": "myapp.tasks.reports.build_monthly", "queue": "default", "state": "ok",
     "options": {"timeout": 600.0, "max_retries": 5, "priority": 20, "jitter": True,
                 "retry_delay": 1.5, "no_retry_for": ["ValueError", "myapp.errors.BadInput"],
                 "max_concurrency": None},
     "pending": 12, "running": 1},
    {"name": "send_email", "queue": "mail", "state": "paused", "options": {},
     "pending": 0, "running": 0},
]


def test_handlers_lists_each_handler_with_its_options(
        fake: Callable[..., tuple[FakeDaemon, Callable[..., Run]]]) -> None:
    _, cli = fake(handlers=[{"handlers": list(reversed(HANDLERS))}])
    run = cli("handlers")
    lines = run.out.splitlines()
    assert run.code == 0 and all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["NAME", "QUEUE", "STATE", "PENDING", "RUNNING"]
    assert lines[1].split() == ["myapp.tasks.reports.build_monthly", "default", "ok", "12", "1"]
    options = " ".join(line.strip() for line in lines[2:4] if line.startswith("    "))
    assert options == ("priority=20 max_retries=5 retry_delay=1.5 jitter=true timeout=600 "
                       "no_retry_for=ValueError,myapp.errors.BadInput")
    assert lines[-2].split() == ["send_email", "mail", "paused", "0", "0"]
    assert lines[-1] == "2 handler(s)"
    run = cli("--json", "handlers")
    assert json.loads(run.out) == {"handlers": list(reversed(HANDLERS))}
