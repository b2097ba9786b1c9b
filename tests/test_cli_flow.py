"""jobd-cli's flow-control commands (docs/cli.md): `queues`, `queues|handlers
pause|resume NAME`, the held columns of `handlers`, `status` and `top`,
`submit --queue`, and the command lines of `cancel --all` / `retry --all` /
`replay`.

The pure parts (tables, the filter a command line makes, usage errors) run
without a daemon; the rest through the real daemon, in-process via `main`,
and one run of the real entry point for the exit statuses. The bulk commands
against the daemon are in tests/test_client_bulk.py.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ROOT, SUPPORT, DaemonProc, T, wait_until

from jobd.cli import main
from jobd.cli.app import build_parser
from jobd.cli.commands import held_text, job_pairs
from jobd.cli.flow import cancelled_lines, dry_run_lines, job_filter, pause_text, queue_lines
from jobd.cli.top import Snapshot, held_table, render

CLI = [sys.executable, "-m", "jobd.cli"]
ID_RE = re.compile(r"\b[0-9a-f]{32}\b")
QUEUES_CONFIG = """
[queues.slow]
workers = 1
max_size = 50
"""


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out!r}, err={self.err!r})"


def runner(socket: str, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(["--socket", socket, *argv])
        out, err = capsys.readouterr()
        return Run(code, out, err)
    return run


@pytest.fixture
def flow_daemon(make_daemon: Callable[..., DaemonProc]) -> DaemonProc:
    return make_daemon(workers=1, config=QUEUES_CONFIG)


@pytest.fixture
def cli(flow_daemon: DaemonProc, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    return runner(flow_daemon.socket, capsys)


def parse(*argv: str) -> Any:
    args = build_parser().parse_args(list(argv))
    if getattr(args, "check", None) is not None:
        args.check(args)
    return args


# --- pure: command lines, tables ------------------------------------------------------------------

def test_all_without_filters_asks_for_all_jobs() -> None:
    assert job_filter(parse("cancel", "--all")) == {"all": True}
    assert job_filter(parse("retry", "--all", "--yes")) == {"all": True}


def test_filters_become_the_ops_fields() -> None:
    args = parse("cancel", "--all", "--status", "pending", "--queue", "slow", "--handler", "h",
                 "--tag", "k=v", "--created-before", "2026-01-02T00:00:00Z",
                 "--created-after", "2026-01-01T00:00:00Z", "--error-match", "timeout")
    assert job_filter(args) == {
        "status": "pending", "queue": "slow", "handler": "h", "tag": "k=v",
        "created_before": "2026-01-02T00:00:00Z", "created_after": "2026-01-01T00:00:00Z",
        "error_match": "timeout"}
    args = parse("retry", "--all", "--status", "failed", "--status", "dead_letter", "--status", "failed")
    assert job_filter(args) == {"status": ["failed", "dead_letter"]}


@pytest.mark.parametrize(("argv", "message"), [
    (["cancel"], "give a job ID, or --all"),
    (["retry"], "give a job ID, or --all"),
    (["cancel", "abc", "--all"], "not both"),
    (["cancel", "abc", "--status", "failed"], "--status goes with --all"),
    (["retry", "abc", "--queue", "slow"], "--queue goes with --all"),
    (["retry", "abc", "--yes"], "--yes goes with --all"),
    (["cancel", "--all", "--status", "nope"], "invalid choice"),
    (["queues", "pause"], "required: NAME"),
    (["queues", "pause", "default", "--for", "-1"], "not a number of seconds"),
    (["queues", "frob"], "invalid choice"),
    (["handlers", "resume"], "required: NAME"),
    (["submit", "h", "--on-conflict", "merge"], "invalid choice"),
    (["replay"], "required: ID"),
    (["replay", "abc", "--args", '{"a": 1}'], "must be a JSON array"),
])
def test_usage_errors_exit_2_before_connecting(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", "/nonexistent/jobd.sock", *argv]) == 2
    assert message in capsys.readouterr().err
    assert main(["--socket", "/nonexistent/jobd.sock", "--json", *argv]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["error"]["code"] == "usage" and message in document["error"]["message"]


def test_queue_table_tolerates_a_daemon_that_sends_less() -> None:
    lines = queue_lines([{"name": "default"}, {"name": "slow", "workers": 2, "pending": 4,
                                               "paused": {"queue": "slow", "reason": "r"}}], 80)
    assert lines[0].split() == ["NAME", "WORKERS", "PAUSED", "RATE", "MAX", "PENDING", "HELD",
                                "RUNNING", "SCHED", "WAIT", "RETRY"]
    assert lines[1].split() == ["default", "-", "no", "-", "-", "0", "0", "0", "0", "0", "0"]
    assert lines[2].split() == ["slow", "2", "yes", "-", "-", "4", "0", "0", "0", "0", "0"]
    assert lines[3] == "    paused since - until resumed: r"


def test_pause_and_held_texts() -> None:
    paused = {"since": "2026-01-01T10:00:00.000000Z", "until": None, "reason": None, "by_uid": 7}
    assert re.fullmatch(r"paused since \S.* until resumed by uid 7", pause_text(paused))
    assert held_text(None) == "-"
    held = {"reason": "handler_paused", "since": "2026-01-01T10:00:00.000000Z", "until": None}
    assert held_text(held).startswith("handler_paused since ")


def test_status_shows_flow_fields_only_when_the_daemon_sends_them() -> None:
    old = dict(job_pairs({"id": "a", "status": "pending", "handler": "h"}))
    assert not {"queue", "held", "unique_key", "replay_of"} & set(old)
    pairs = job_pairs({"id": "a", "status": "pending", "handler": "h", "queue": "slow",
                       "held": None, "unique_key": "k", "replay_of": None})
    names = [name for name, _ in pairs]
    assert names[names.index("handler") + 1] == "queue" and names[names.index("status") + 1] == "held"
    assert dict(pairs)["queue"] == "slow" and dict(pairs)["held"] == "-"
    assert dict(pairs)["unique_key"] == "k" and dict(pairs)["replay_of"] == "-"


def test_bulk_reports() -> None:
    assert dry_run_lines({"matched": 0, "sample": []}, "cancel") == ["no job matches: nothing to cancel"]
    lines = dry_run_lines({"matched": 12, "sample": ["a" * 32, "b" * 32]}, "retry")
    assert lines == ["12 job(s) match, e.g.:", "    " + "a" * 32, "    " + "b" * 32,
                     "dry run: nothing was changed; re-run with --yes to retry them"]
    assert cancelled_lines({"matched": 3, "cancelled": 3}, False) == ["cancelled 3 of 3 matching job(s)"]
    assert "--force" in cancelled_lines({"matched": 3, "cancelled": 1}, False)[1]
    assert len(cancelled_lines({"matched": 3, "cancelled": 1}, True)) == 1


def test_top_held_section_says_why_and_tolerates_missing_fields() -> None:
    queues = [{"name": "default", "paused": {"queue": "default"}}, {"name": "slow"}]
    handlers = [{"name": "a", "queue": "default", "state": "ok", "held": 3},
                {"name": "b", "state": "paused", "held": 1, "paused": {"reason": "flaky"}},
                {"name": "c", "state": "ok", "held": 0}, {"name": "d"}]
    lines = held_table(handlers, queues, 80)
    assert [line.split()[:3] for line in lines[1:]] == [["a", "ok", "3"], ["b", "paused", "1"]]
    assert lines[1].endswith("queue default paused") and lines[2].endswith("paused: flaky")
    assert held_table([{"name": "x"}], [], 80) == []
    frame = render(Snapshot("v", {}, [], [], queues, handlers), "/s", 80)
    assert any(line.split()[:2] == ["default", "yes"] for line in frame)
    assert any(line.split()[:2] == ["slow", "no"] for line in frame)
    assert "QUEUE" in "\n".join(frame) and "HELD HANDLER" in "\n".join(frame)
    # An older daemon: no queues, no handlers views; the frame is as before.
    old = render(Snapshot("v", {}, [], []), "/s", 80)
    assert "HELD HANDLER" not in "\n".join(old) and "RECENT FAILURES" in old


def test_top_cuts_a_section_that_does_not_fit_and_says_so() -> None:
    queues = [{"name": f"q{i}"} for i in range(30)]
    frame = render(Snapshot("v", {}, [{"id": 1}], [], queues), "/s", 80, height=20)
    assert len(frame) == 20 and re.fullmatch(r"\.\.\. \d+ more line\(s\); enlarge the terminal", frame[-1])


# --- through the daemon ----------------------------------------------------------------------------

def test_queues_lists_pauses_and_resumes(cli: Callable[..., Run], flow_daemon: DaemonProc) -> None:
    run = cli("queues")
    assert run.code == 0 and run.out.splitlines()[-1] == "2 queue(s)"
    rows = {line.split()[0]: line.split() for line in run.out.splitlines()[1:-1]}
    assert rows["default"][1:3] == ["1", "no"] and rows["slow"][1:5] == ["1", "no", "-", "50"]
    run = cli("queues", "pause", "slow", "--for", "600", "--reason", "deploy")
    assert run.code == 0 and re.fullmatch(r"paused queue slow until \S+: deploy\n", run.out)
    job_id = cli("submit", T + "add", "1", "2", "--queue", "slow").out.strip()
    assert ID_RE.fullmatch(job_id)
    lines = cli("queues").out.splitlines()
    slow = next(i for i, line in enumerate(lines) if line.startswith("slow "))
    assert lines[slow].split()[2] == "yes" and lines[slow].split()[5:7] == ["1", "1"]  # pending, held
    assert re.fullmatch(r"    paused since \S+ until \S+ by uid \d+: deploy", lines[slow + 1])
    status = cli("status", job_id).out
    assert re.search(r"^queue +slow$", status, re.M)
    assert re.search(r"^held +queue_paused since \S+ until \S+$", status, re.M)
    document = cli("--json", "queues").json()
    (view,) = [q for q in document["queues"] if q["name"] == "slow"]
    assert view["paused"]["reason"] == "deploy" and view["held"] == 1
    assert cli("list", "--queue", "slow").out.splitlines()[-1] == "1 job(s)"
    run = cli("queues", "resume", "slow")
    assert run.code == 0 and run.out == "resumed queue slow\n"
    run = cli("queues", "resume", "slow")
    assert run.code == 0 and run.out == "queue slow was not paused\n"
    assert flow_daemon.client().wait(job_id, timeout=20).result == 3


def test_json_prints_the_raw_replies(cli: Callable[..., Run]) -> None:
    paused = cli("--json", "queues", "pause", "default", "--reason", "r").json()
    assert set(paused) == {"paused"}
    assert paused["paused"]["queue"] == "default" and paused["paused"]["reason"] == "r"
    assert set(paused["paused"]) >= {"since", "until", "reason", "by_uid"}
    assert cli("--json", "queues", "resume", "default").json() == {"resumed": True}
    assert cli("queues", "resume", "default", "--json").json() == {"resumed": False}
    assert cli("--json", "handlers", "pause", T + "add").json()["paused"]["handler"] == T + "add"
    assert cli("--json", "handlers", "resume", T + "add").json() == {"resumed": True}


def test_unknown_names_exit_1_with_not_found(cli: Callable[..., Run]) -> None:
    for argv in (["queues", "resume", "nope"], ["queues", "pause", "nope"],
                 ["handlers", "pause", "nope"], ["handlers", "resume", "nope"]):
        run = cli(*argv)
        assert run.code == 1 and run.out == "" and run.err.startswith("error: not_found: "), argv
        run = cli("--json", *argv)
        assert run.code == 1 and run.json()["error"]["code"] == "not_found", argv


def test_handlers_pause_shows_state_held_and_why(cli: Callable[..., Run],
                                                 flow_daemon: DaemonProc) -> None:
    run = cli("handlers", "pause", T + "add", "--reason", "flaky API")
    assert run.code == 0 and run.out == f"paused handler {T}add until resumed: flaky API\n"
    job_id = cli("submit", T + "add", "2", "3").out.strip()
    lines = cli("handlers").out.splitlines()
    assert lines[0].split() == ["NAME", "QUEUE", "STATE", "PENDING", "RUNNING", "HELD", "FAILS",
                                "RATE", "NEXT", "TRIAL"]
    row = next(i for i, line in enumerate(lines) if line.startswith(T + "add "))
    assert lines[row].split()[1:] == ["default", "paused", "1", "0", "1", "0", "-", "-"]
    assert re.fullmatch(r"    paused since \S+ until resumed by uid \d+: flaky API", lines[row + 1])
    assert re.search(r"^held +handler_paused since \S+$", cli("status", job_id).out, re.M)
    top = cli("top", "--once").out
    assert re.search(rf"^{re.escape(T)}add +paused +1 +paused: flaky API$", top, re.M)
    snap = cli("--json", "top").json()
    assert {q["name"] for q in snap["queues"]} == {"default", "slow"}
    assert next(h for h in snap["handlers"] if h["name"] == T + "add")["state"] == "paused"
    run = cli("handlers", "resume", T + "add")
    assert run.code == 0 and run.out == f"resumed handler {T}add\n"
    assert flow_daemon.client().wait(job_id, timeout=20).result == 5


def test_handlers_pause_for_a_while(cli: Callable[..., Run], flow_daemon: DaemonProc) -> None:
    run = cli("handlers", "pause", T + "noop", "--for", "0.5")
    assert run.code == 0 and re.fullmatch(rf"paused handler {re.escape(T)}noop until \S+\n", run.out)
    c = flow_daemon.client()
    wait_until(lambda: next(h for h in c.handlers() if h["name"] == T + "noop")["state"] == "ok",
               what="the pause to run out")


def test_top_shows_each_queue_paused_pending_and_held(cli: Callable[..., Run],
                                                      flow_daemon: DaemonProc) -> None:
    cli("queues", "pause", "slow")
    for _ in range(3):
        cli("submit", T + "noop", "--queue", "slow")
    lines = cli("top", "--once").out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["QUEUE", "PAUSED"])
    assert lines[header].split() == ["QUEUE", "PAUSED", "PENDING", "HELD", "RUNNING", "WORKERS"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[header + 1:header + 3]}
    assert rows == {"default": ["no", "0", "0", "0", "1"], "slow": ["yes", "3", "3", "0", "1"]}
    held = next(i for i, line in enumerate(lines) if line.split()[:2] == ["HELD", "HANDLER"])
    assert lines[held].split() == ["HELD", "HANDLER", "STATE", "HELD", "WHY"]
    assert lines[held + 1].split()[:3] == [T + "noop", "ok", "3"]
    # A handler whose own queue is paused says so.
    cli("queues", "pause", "default", "--for", "600")
    cli("submit", T + "add", "1", "1")
    frame = cli("top", "--once").out
    assert re.search(rf"^{re.escape(T)}add +ok +1 +queue default paused$", frame, re.M)
    assert re.search(r"^default +until \S+ +1 +1 +0 +1$", frame, re.M)


def test_submit_queue_and_scale_queue(cli: Callable[..., Run], flow_daemon: DaemonProc) -> None:
    run = cli("scale", "2", "--queue", "slow")
    assert run.code == 0 and run.out == "workers of queue slow: 1 -> 2\n"
    run = cli("submit", T + "add", "1", "1", "--queue", "slow", "--wait")
    assert run.code == 0 and run.out.splitlines()[-1] == "2"
    run = cli("submit", T + "add", "1", "1", "--queue", "nope")
    assert run.code == 1 and run.err.startswith("error: invalid_argument: queue")


def test_exit_statuses_of_the_real_entry_point(flow_daemon: DaemonProc) -> None:
    env = {"PYTHONPATH": f"{SUPPORT}:{ROOT}", "PATH": "/usr/bin:/bin"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "--socket", flow_daemon.socket, *argv], capture_output=True,
                              text=True, env=env, timeout=30)
    assert run("queues", "pause", "default").returncode == 0
    assert run("queues", "resume", "default").returncode == 0
    missing = run("queues", "resume", "nope")
    assert missing.returncode == 1 and missing.stderr == "error: not_found: no queue named 'nope'\n"
    assert run("queues", "pause").returncode == 2
    assert run("cancel", "--yes", "x").returncode == 2
