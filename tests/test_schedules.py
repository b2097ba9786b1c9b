"""Cron schedules through the real daemon (docs/schedules.md).

Schedules that must fire use 6-field expressions (`* * * * * *`: every
second). Every wait is on a condition with a deadline; the only waits for
time itself are where the premise is "the daemon was down while runs were
due", and they wait for the wall clock to pass a computed instant.
"""
from __future__ import annotations

import calendar
import json
import math
import signal
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import DaemonProc, T, wait_until

from jobd.cli import main as cli_main
from jobd.constants import EXIT_CONFIG
from jobd.core import records as R
from jobd.storage import codec
from jobd_client import AsyncClient, Client, JobdError

EVERY_SECOND = "* * * * * *"
NEVER_SOON = "0 0 29 2 *"          # Feb 29 at midnight: not during a test run


# --- helpers ---------------------------------------------------------------------------

def runs(client: Client, name: str, status: str | None = None) -> list[Any]:
    """The jobs a schedule made (they are named after it), oldest first."""
    return [j for j in client.list(status=status, limit=100_000).jobs if j.name == name]


def due_of(job_id: str) -> float:
    """The fire time in a run's job id (`sched:<name>:20260101T000000Z`)."""
    stamp = job_id.rsplit(":", 1)[1]
    return float(calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")))


def schedule(client: Client, name: str) -> dict[str, Any] | None:
    return next((s for s in client.schedule_list() if s["name"] == name), None)


def wal_files(d: DaemonProc) -> list[Path]:
    return sorted((Path(d.data_dir) / "wal").glob("*.log"))


def wal_records(d: DaemonProc) -> list[Any]:
    out: list[Any] = []
    for path in wal_files(d):
        out += codec.scan(path.read_bytes()).records
    return out


def count_tag(d: DaemonProc, tag: str) -> int:
    return sum(1 for rec in wal_records(d) if rec[0] == tag)


def record_offsets(data: bytes) -> list[tuple[int, Any]]:
    """(offset, record) for each record of a segment (header: u16 magic, u32 len, u32 crc)."""
    out, off = [], 0
    while off < len(data):
        _, n, _ = struct.unpack_from("<HII", data, off)
        out.append((off, json.loads(data[off + codec.HEADER_SIZE: off + codec.HEADER_SIZE + n])))
        off += codec.HEADER_SIZE + n
    return out


def wait_fired(client: Client, name: str, times: int = 1, status: str | None = None) -> list[Any]:
    return wait_until(lambda: len(runs(client, name, status)) >= times and runs(client, name, status),
                      timeout=15, what=f"{times} run(s) of schedule {name!r}")


def wait_clock(instant: float) -> None:
    """Until the wall clock passes `instant` (the premise of a catch-up test)."""
    wait_until(lambda: time.time() > instant, timeout=30, interval=0.05,
               what=f"the clock to pass {instant}")


def ask(d: DaemonProc, request: dict[str, Any]) -> dict[str, Any]:
    """One raw request and its reply (the client drops None-valued fields)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(d.socket)
        s.sendall(orjson.dumps({"id": 1, **request}) + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    reply: dict[str, Any] = orjson.loads(data)
    return reply


def burst(after: float, seconds: int) -> tuple[int, int]:
    """(first, last): `seconds` whole seconds, the first after `after`, in one UTC minute."""
    first = math.ceil(after)
    if first % 60 + seconds > 60:
        first += 60 - first % 60
    return first, first + seconds - 1


def burst_cron(first: int, last: int) -> str:
    """Every second from `first` to `last` (one UTC minute), then not for a year."""
    t = time.gmtime(first)
    return f"{t.tm_sec}-{t.tm_sec + last - first} {t.tm_min} {t.tm_hour} {t.tm_mday} {t.tm_mon} *"


def logged_job_ids(d: DaemonProc) -> set[str]:
    """Ids of the jobs in the WAL (submits and snapshot chunks)."""
    ids = {rec[1][0] for rec in wal_records(d) if rec[0] == R.SUBMIT}
    return ids | {job[0] for rec in wal_records(d) if rec[0] == R.JOBS for job in rec[1]}


# --- add, list, remove ---------------------------------------------------------------------

def test_add_list_remove(daemon: DaemonProc, client: Client) -> None:
    view = client.schedule_add("report", "0 3 * * mon-fri", T + "echo", args=["a", 1],
                               kwargs={"x": True}, timezone="Europe/Berlin", priority="high",
                               max_retries=5, timeout=30, tags={"team": "ops"})
    assert view["name"] == "report" and view["cron"] == "0 3 * * mon-fri"
    assert view["handler"] == T + "echo" and view["args"] == ["a", 1]
    assert view["kwargs"] == {"x": True} and view["timezone"] == "Europe/Berlin"
    assert view["priority"] == 20 and view["max_retries"] == 5 and view["timeout"] == 30.0
    assert view["tags"] == {"team": "ops"} and view["source"] == "api"
    assert view["last_run"] is None and view["last_job_id"] is None
    assert view["next_run"].endswith("Z") and view["next_run"] > time.strftime("%Y-%m-%dT%H:%M:%S")
    # 03:00 in Berlin is 01:00 or 02:00 UTC.
    assert view["next_run"][11:13] in ("01", "02"), view["next_run"]

    client.schedule_add("alpha", "@hourly", T + "noop")
    listed = client.schedule_list()
    assert [s["name"] for s in listed] == ["alpha", "report"]
    assert listed[1] == view
    assert listed[0]["timezone"] == "UTC" and listed[0]["priority"] is None
    assert listed[0]["next_run"].endswith(":00:00.000000Z")

    assert client.schedule_remove("report") is True
    assert client.schedule_remove("report") is False
    assert [s["name"] for s in client.schedule_list()] == ["alpha"]
    assert count_tag(daemon, R.SCHEDULE_ADD) == 2 and count_tag(daemon, R.SCHEDULE_REMOVE) == 1


def test_view_options_tell_no_timeout_from_the_handler_default(daemon: DaemonProc,
                                                              client: Client) -> None:
    """`"timeout": null` (no timeout) and no `timeout` (the handler's, 30 s
    here) both show the flat `timeout` as null; `options` tells them apart."""
    base = {"op": "schedule_add", "cron": EVERY_SECOND, "handler": "custom_name"}
    replies = [ask(daemon, {**base, "name": "default"}),
               ask(daemon, {**base, "name": "unlimited", "timeout": None})]
    assert all(r["ok"] for r in replies), replies
    omitted, no_timeout = (r["schedule"] for r in replies)
    assert omitted["timeout"] is None and no_timeout["timeout"] is None   # unchanged field
    assert omitted["options"] == {} and no_timeout["options"] == {"timeout": None}
    full = client.schedule_add("full", NEVER_SOON, T + "noop", priority="high", timeout=5,
                               retry_delay=2, tags={"k": "v"})
    assert full["options"] == {"priority": 20, "timeout": 5.0, "retry_delay": 2.0,
                               "tags": {"k": "v"}}
    assert {s["name"]: s["options"] for s in client.schedule_list()} == {
        "default": {}, "unlimited": {"timeout": None}, "full": full["options"]}
    # What the options say is what the runs get.
    assert wait_fired(client, "default")[0].timeout == 30.0
    assert wait_fired(client, "unlimited")[0].timeout is None


BAD_ADDS: list[tuple[dict[str, Any], str, str]] = [
    ({"cron": NEVER_SOON, "handler": T + "noop"}, "invalid_argument", "name"),
    ({"name": "", "cron": NEVER_SOON, "handler": T + "noop"}, "invalid_argument", "name"),
    ({"name": "  ", "cron": NEVER_SOON, "handler": T + "noop"}, "invalid_argument", "name"),
    ({"name": 5, "cron": NEVER_SOON, "handler": T + "noop"}, "invalid_argument", "name"),
    ({"name": "a\nb", "cron": NEVER_SOON, "handler": T + "noop"}, "invalid_argument", "name"),
    ({"name": "x", "handler": T + "noop"}, "invalid_argument", "cron"),
    ({"name": "x", "cron": 5, "handler": T + "noop"}, "invalid_argument", "cron"),
    ({"name": "x", "cron": "61 * * * *", "handler": T + "noop"}, "invalid_argument", "cron"),
    ({"name": "x", "cron": "* * *", "handler": T + "noop"}, "invalid_argument", "cron"),
    ({"name": "x", "cron": "0 0 30 2 *", "handler": T + "noop"}, "invalid_argument", "cron"),
    ({"name": "x", "cron": NEVER_SOON}, "invalid_argument", "handler"),
    ({"name": "x", "cron": NEVER_SOON, "handler": "no.such"}, "unknown_handler", "no.such"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "timezone": "Mars/Base"},
     "invalid_argument", "timezone"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "timezone": 1},
     "invalid_argument", "timezone"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "args": "a"}, "invalid_argument", "args"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "kwargs": []}, "invalid_argument", "kwargs"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "priority": "urgent"},
     "invalid_argument", "priority"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "max_retries": -1},
     "invalid_argument", "max_retries"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "timeout": 0},
     "invalid_argument", "timeout"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "retry_backoff": 0.5},
     "invalid_argument", "retry_backoff"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "tags": ["a"]},
     "invalid_argument", "tags"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "delay": 5}, "invalid_argument", "delay"),
    ({"name": "x", "cron": NEVER_SOON, "handler": T + "noop", "job_id": "j"},
     "invalid_argument", "job_id"),
]


def test_invalid_schedule_add_changes_nothing(daemon: DaemonProc, client: Client) -> None:
    client.schedule_add("x", NEVER_SOON, T + "noop")        # an upsert must not touch it either
    before, records = client.schedule_list(), len(wal_records(daemon))
    for request_args, code, field in BAD_ADDS:
        with pytest.raises(JobdError) as err:
            client.call("schedule_add", **request_args)
        assert err.value.code == code and field in err.value.message, (request_args, err.value)
    assert client.schedule_list() == before
    assert len(wal_records(daemon)) == records
    assert client.hello()["protocol"] == 1                  # the connection still works


def test_invalid_schedule_remove(client: Client) -> None:
    for bad in (5, "", None):
        with pytest.raises(JobdError) as err:
            client.call("schedule_remove", name=bad)
        assert err.value.code == "invalid_argument" and "name" in err.value.message


# --- firing ----------------------------------------------------------------------------------

def test_schedules_fire_real_jobs_upsert_and_remove(daemon: DaemonProc, client: Client) -> None:
    client.schedule_add("tick", EVERY_SECOND, T + "echo", args=["v1"], tags={"from": "cron"})
    client.schedule_add("odd name ☃", EVERY_SECOND, T + "add", args=[2, 3])
    done = wait_fired(client, "tick", 2, status="completed")
    for job in done:
        assert job.id.startswith("sched:tick:") and job.handler == T + "echo"
        assert job.tags == {"from": "cron"}
        assert client.wait(job.id, timeout=5).result == {"args": ["v1"], "kwargs": {}}
    dues = sorted(due_of(j.id) for j in runs(client, "tick"))
    assert len(set(dues)) == len(dues) and all(d == int(d) for d in dues)
    view = schedule(client, "tick")
    assert view is not None and view["last_job_id"] in {j.id for j in runs(client, "tick")}
    assert view["next_run"] > view["last_run"]
    odd = wait_fired(client, "odd name ☃", 1, status="completed")[0]
    assert odd.id.startswith("sched+") and client.wait(odd.id, timeout=5).result == 5

    # Upsert: same name, new arguments; one schedule, its history kept.
    replaced = client.schedule_add("tick", EVERY_SECOND, T + "echo", args=["v2"])
    assert replaced["last_run"] is not None and replaced["tags"] == {}
    assert [s["name"] for s in client.schedule_list()].count("tick") == 1
    wait_until(lambda: any(j.args == ["v2"] for j in runs(client, "tick", "completed")),
               what="a run with the replaced arguments")

    # Removal: no run after the reply. The other schedule proves time went on
    # (a run of `tick` would come in the same timer wake-up as its next run).
    assert client.schedule_remove("tick") is True
    made = {j.id for j in runs(client, "tick")}
    seen = len(runs(client, "odd name ☃"))
    wait_fired(client, "odd name ☃", seen + 1)
    assert {j.id for j in runs(client, "tick")} == made


def test_shutdown_skips_due_runs(make_daemon: Callable[..., DaemonProc]) -> None:
    d = make_daemon(workers=1, config="[workers]\nshutdown_timeout = 1.1\n")
    c = d.client()
    started = d.root / "started"
    c.submit(T + "block", args=[str(started)])           # keeps the shutdown busy
    wait_until(started.exists, what="the blocking job to start")
    c.schedule_add("tick", EVERY_SECOND, T + "noop")
    wait_fired(c, "tick", 1)
    c.close()
    assert d.stop() == 0
    log = d.log()
    stopping = log.index("SIGTERM received")
    assert "schedule 'tick' fired" in log[:stopping]
    assert "schedule 'tick' fired" not in log[stopping:], log[stopping:]
    assert "not submitted" not in log, log


# --- restarts ------------------------------------------------------------------------------------

def test_kill9_restart_keeps_schedules_catches_up_once_without_duplicates(
        make_daemon: Callable[..., DaemonProc]) -> None:
    """`a` and `b` fire every second. After kill -9, the WAL is cut just before
    the first `ST` record of `a`: its job for that run exists but the daemon
    never noted the run, as if it had crashed between the two records. On
    restart each schedule makes up its first missed run only, `a` by finding
    the job it already made (same deterministic id), and then runs from now."""
    d = make_daemon(workers=0)
    c = d.client()
    c.schedule_add("b", EVERY_SECOND, T + "noop", priority=7)
    c.schedule_add("yearly", NEVER_SOON, T + "noop")
    wait_fired(c, "b", 1)
    c.schedule_add("a", EVERY_SECOND, T + "noop")
    wait_fired(c, "a", 1)
    before = {s["name"]: s for s in c.schedule_list()}
    c.close()
    d.kill9()

    lost = _cut_before_first_fired(d, "a")
    survived = {rec[1]: rec[2] for rec in wal_records(d) if rec[0] == R.SCHEDULE_FIRED}
    existing = {rec[1][0] for rec in wal_records(d) if rec[0] == R.SUBMIT}
    assert lost[3] in existing and "a" not in survived and "b" in survived
    survived["a"] = lost[2] - 1        # `a` was added in the second before its first run
    wait_clock(lost[2] + 1.2)          # a second run of each is due while it is down
    restart = time.time()
    d.start()
    c = d.client()

    for name in ("a", "b"):
        first_missed = survived[name] + 1
        wait_until(lambda n=name, f=first_missed: (schedule(c, n) or {}).get("last_run")
                   and due_of(schedule(c, n)["last_job_id"]) >= f, what=f"{name} to run again")
        dues = sorted(due_of(j.id) for j in runs(c, name))
        assert first_missed in dues, (name, dues)
        later = [t for t in dues if t > first_missed]
        assert not later or later[0] >= int(restart), (name, first_missed, restart, dues)
    a_run = c.status(lost[3])
    assert a_run.created_at is not None and a_run.created_at < time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(restart))
    assert [j.id for j in runs(c, "a")].count(lost[3]) == 1
    fired = [rec for rec in wal_records(d) if rec[0] == R.SCHEDULE_FIRED and rec[1] == "a"]
    assert any(rec[3] == lost[3] for rec in fired)       # the catch-up noted that very job
    after = {s["name"]: s for s in c.schedule_list()}
    for name, view in before.items():
        for key in ("cron", "handler", "timezone", "priority", "source"):
            assert after[name][key] == view[key]
    assert runs(c, "yearly") == []
    assert "missed its run" in d.log()


def _cut_before_first_fired(d: DaemonProc, name: str) -> list[Any]:
    """Truncate the WAL at the first `ST` record of `name`; return that record."""
    path = wal_files(d)[-1]
    data = path.read_bytes()
    offset, rec = next((off, r) for off, r in record_offsets(data)
                       if r[0] == R.SCHEDULE_FIRED and r[1] == name)
    with open(path, "r+b") as f:
        f.truncate(offset)
    return rec


def test_one_catch_up_run_per_outage_however_many_restarts(
        make_daemon: Callable[..., DaemonProc]) -> None:
    """A schedule due every second for a few seconds while jobd is down. The
    first start makes up one run, the first it missed; quick restarts after it
    make none, because the schedule last ran after all those due times (not at
    the due time the catch-up job is named after)."""
    d = make_daemon(workers=0)
    c = d.client()
    first, last = burst(time.time() + 3, 4)
    c.schedule_add("burst", burst_cron(first, last), T + "noop")
    c.close()
    assert d.stop() == 0
    before = logged_job_ids(d)
    missed = [t for t in range(first, last + 1) if t > max(map(due_of, before), default=0)]
    assert len(missed) >= 2, f"premise: jobd stopped after {len(before)} run(s) of the burst"
    wait_clock(last + 0.2)

    views = []
    for start in range(3):
        d.start()
        c = d.client()
        made = [j.id for j in runs(c, "burst") if j.id not in before]
        assert [due_of(i) for i in made] == missed[:1], (start, made)
        views.append(schedule(c, "burst"))
        c.close()
        assert d.stop() == 0
    view = views[0]
    assert view is not None and view["last_job_id"] == made[0]
    # It ran after the burst; it was the run due at the burst's first missed second.
    assert view["last_run"] > iso_utc(last) and view["last_due"] == iso_utc(missed[0])
    assert views[1:] == [view, view]
    assert d.log().count("missed its run") == 1


def test_schedule_records_of_the_older_shape_are_read(make_daemon: Callable[..., DaemonProc]) -> None:
    """A data dir from before runs recorded when they happened: `ST` has no
    run time and `SA` no `last_due`. The due time stands for both."""
    d = make_daemon(workers=0)
    d.client().schedule_add("old", NEVER_SOON, T + "noop")
    assert d.stop() == 0
    [path] = wal_files(d)
    records = codec.scan(path.read_bytes()).records
    assert [r[1].pop("last_due") for r in records if r[0] == R.SCHEDULE_ADD] == [None]
    due, job_id = 1_700_000_000.0, "sched:old:20231114T221320Z"
    records.append([R.SCHEDULE_FIRED, "old", due, job_id])
    path.write_bytes(b"".join(codec.encode(r) for r in records))

    d.start()
    c = d.client()
    view = schedule(c, "old")
    assert view is not None and view["last_job_id"] == job_id
    assert view["last_run"] == view["last_due"] == iso_utc(due)
    upserted = c.schedule_add("old", NEVER_SOON, T + "echo")      # keeps the history
    assert (upserted["last_run"], upserted["last_due"]) == (view["last_run"], view["last_due"])


def iso_utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(ts))


# --- config -------------------------------------------------------------------------------------

CONFIG = f"""
[[schedule]]
name = "cleanup"
cron = "{NEVER_SOON}"
handler = "{T}noop"
timezone = "Europe/Paris"

[[schedule]]
name = "report"
cron = "30 6 * * *"
handler = "{T}echo"
args = ["daily", 1]
kwargs = {{ fmt = "pdf" }}
priority = "low"
tags = {{ kind = "report" }}
"""


def test_config_schedules_at_startup_restart_and_sighup(make_daemon: Callable[..., DaemonProc]) -> None:
    d = make_daemon(config=CONFIG)
    c = d.client()
    listed = {s["name"]: s for s in c.schedule_list()}
    assert set(listed) == {"cleanup", "report"}
    assert listed["report"]["source"] == "config" and listed["report"]["priority"] == 0
    assert listed["report"]["args"] == ["daily", 1] and listed["report"]["kwargs"] == {"fmt": "pdf"}
    assert listed["cleanup"]["timezone"] == "Europe/Paris"
    c.schedule_add("mine", NEVER_SOON, T + "noop")            # over the socket: config leaves it
    assert count_tag(d, R.SCHEDULE_ADD) == 3

    # A restart with the same config writes nothing.
    c.close()
    assert d.stop() == 0
    d.start()
    c = d.client()
    assert [s["name"] for s in c.schedule_list()] == ["cleanup", "mine", "report"]
    assert count_tag(d, R.SCHEDULE_ADD) == 3 and count_tag(d, R.SCHEDULE_REMOVE) == 0

    # SIGHUP: `report` changed, `cleanup` gone, `weekly` new; `mine` untouched.
    assert d.config_path is not None
    Path(d.config_path).write_text(CONFIG.split("[[schedule]]")[0] + f"""
[[schedule]]
name = "report"
cron = "45 7 * * *"
handler = "{T}echo"

[[schedule]]
name = "weekly"
cron = "@weekly"
handler = "{T}noop"
""")
    reloads = d.log().count("SIGHUP: config reloaded")
    d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_until(lambda: d.log().count("SIGHUP: config reloaded") > reloads, what="the reload")
    listed = {s["name"]: s for s in c.schedule_list()}
    assert set(listed) == {"mine", "report", "weekly"}
    assert listed["report"]["cron"] == "45 7 * * *" and listed["report"]["args"] == []
    assert listed["mine"]["source"] == "api" and listed["weekly"]["source"] == "config"
    assert count_tag(d, R.SCHEDULE_ADD) == 5 and count_tag(d, R.SCHEDULE_REMOVE) == 1

    # A reload naming an unknown handler changes nothing.
    Path(d.config_path).write_text(f'[[schedule]]\nname = "x"\ncron = "@daily"\nhandler = "{T}nope"\n')
    d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_until(lambda: "schedules not reloaded" in d.log(), what="the refused reload")
    assert "schedule[0].handler" in d.log()
    assert {s["name"] for s in c.schedule_list()} == {"mine", "report", "weekly"}
    assert count_tag(d, R.SCHEDULE_ADD) == 5 and count_tag(d, R.SCHEDULE_REMOVE) == 1


def test_sighup_with_refused_schedules_says_they_were_not_reloaded(
        make_daemon: Callable[..., DaemonProc]) -> None:
    good = f'[[schedule]]\nname = "keep"\ncron = "{NEVER_SOON}"\nhandler = "{T}noop"\n'
    d = make_daemon(workers=None, config="[workers]\ncount = 1\n" + good)
    c = d.client()
    assert d.config_path is not None and d.proc is not None
    bad = f'[[schedule]]\nname = "x"\ncron = "@daily"\nhandler = "{T}nope"\n'
    Path(d.config_path).write_text("[workers]\ncount = 2\n" + bad)
    d.proc.send_signal(signal.SIGHUP)
    line = wait_until(lambda: next((ln for ln in d.log().splitlines() if "SIGHUP:" in ln), None),
                      what="the reload's summary line")
    assert "schedules not reloaded" in line and "schedule[0].handler" in line, line
    assert "workers=2" in line and "config reloaded (" not in line, line
    assert [s["name"] for s in c.schedule_list()] == ["keep"]
    wait_until(lambda: len(c.workers()) == 2, what="the new worker count to apply")


@pytest.mark.parametrize("entries, key", [
    ('[[schedule]]\nname = "a"\ncron = "99 * * * *"\nhandler = "{T}noop"', "schedule[0].cron"),
    ('[[schedule]]\nname = "a"\ncron = "@daily"\nhandler = "{T}noop"\n'
     '[[schedule]]\nname = "b"\ncron = "@daily"\nhandler = "{T}missing"', "schedule[1].handler"),
    ('[[schedule]]\nname = "a"\ncron = "@daily"\nhandler = "{T}noop"\ndelay = 5', "schedule[0].delay"),
    ('[[schedule]]\nname = "a"\ncron = "@daily"\nhandler = "{T}noop"\ntimezone = "Nowhere/X"',
     "schedule[0].timezone"),
    ('[[schedule]]\ncron = "@daily"\nhandler = "{T}noop"', "schedule[0].name"),
    ('[[schedule]]\nname = "a"\ncron = "@daily"\nhandler = "{T}noop"\n'
     '[[schedule]]\nname = "a"\ncron = "@hourly"\nhandler = "{T}noop"', "schedule[1].name"),
    ('schedule = "nope"', "'schedule'"),
])
def test_bad_config_schedule_exits_78(make_daemon: Callable[..., DaemonProc], entries: str,
                                      key: str) -> None:
    d = make_daemon(start=False, config=entries.replace("{T}", T))
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(20) == EXIT_CONFIG, d.log()
    assert key in d.log(), d.log()


A_DATE = "a TOML date/time"


@pytest.mark.parametrize("entries, key, why", [
    ('args = [1979-05-27T07:32:00Z]', "schedule[0].args[0]",
     f'{A_DATE} (1979-05-27T07:32:00+00:00) is not a JSON value; write it as a string: '
     f'"1979-05-27T07:32:00+00:00"'),
    ('args = [["a", 1979-05-27T07:32:00]]', "schedule[0].args[0][1]", A_DATE),
    ('kwargs = { at = 07:32:00 }', "schedule[0].kwargs.at", A_DATE),
    ('kwargs = { "not bare" = { on = 1979-05-27 } }', 'schedule[0].kwargs."not bare".on', A_DATE),
    ('tags = { day = 1979-05-27 }', "schedule[0].tags.day", A_DATE),
    ('args = [nan]', "schedule[0].args[0]", "nan is not a JSON value: numbers must be finite"),
])
def test_config_schedule_with_a_toml_date_or_nan_exits_78(
        make_daemon: Callable[..., DaemonProc], entries: str, key: str, why: str) -> None:
    """Values JSON cannot hold would come back from the WAL as something else
    (a string, null), so the entry would never match its record again."""
    good = f'[[schedule]]\nname = "ok"\ncron = "@daily"\nhandler = "{T}noop"\n'
    d = make_daemon(start=False, config=good + f'{entries}\n')
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(20) == EXIT_CONFIG, d.log()
    assert f"config key '{key}' (schedule 'ok'): {why}" in d.log(), d.log()


RICH_CONFIG = f"""
[[schedule]]
name = "rich"
cron = "{NEVER_SOON}"
handler = "{T}echo"
args = ["ü", 1, 2.5, -0.0, 1e300, true, [], [1, [2, {{}}]], {{ a = {{ b = [1.0] }} }}]
kwargs = {{ n = 9223372036854775807, f = 0.1, nested = [{{ x = "y" }}], empty = {{}} }}
priority = 7
max_retries = 2
retry_delay = 3
retry_backoff = 1
timeout = 60
tags = {{ team = "ops", n = 1, f = 1.5, on = true }}

[[schedule]]
name = "bare"
cron = "{NEVER_SOON}"
handler = "{T}noop"
"""


def test_unchanged_config_schedules_are_not_rewritten(make_daemon: Callable[..., DaemonProc]) -> None:
    d = make_daemon(config=RICH_CONFIG)
    c = d.client()
    assert {s["name"] for s in c.schedule_list()} == {"bare", "rich"}
    assert count_tag(d, R.SCHEDULE_ADD) == 2
    c.close()
    for _ in range(2):
        assert d.stop() == 0
        records = wal_records(d)
        d.start()
        c = d.client()
        assert c.schedule_list()                   # recovered and reconciled
        assert count_tag(d, R.SCHEDULE_ADD) == 2, [r for r in wal_records(d) if r[0] == "SA"]
        assert wal_records(d) == records
        c.close()


# --- CLI and clients -------------------------------------------------------------------------------

def test_cli_schedule_commands(daemon: DaemonProc, client: Client,
                               capsys: pytest.CaptureFixture[str]) -> None:
    def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main(["--socket", daemon.socket, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("schedule", "add", "nightly", "0 3 * * *", T + "echo", "a", "2",
                       "--kwargs", '{"k": 1}', "--timezone", "America/New_York",
                       "--priority", "high", "--timeout", "60", "--max-retries", "2")
    assert code == 0 and "nightly" in out and "next run" in out
    view = schedule(client, "nightly")
    assert view is not None and view["args"] == ["a", 2] and view["kwargs"] == {"k": 1}
    assert view["timezone"] == "America/New_York" and view["priority"] == 20
    assert view["timeout"] == 60.0 and view["max_retries"] == 2

    code, out, _ = cli("schedule", "add", "tick", EVERY_SECOND, T + "noop", "--json")
    assert code == 0 and json.loads(out)["schedule"]["name"] == "tick"
    wait_until(lambda: (schedule(client, "tick") or {}).get("last_job_id"), what="a run")
    code, out, _ = cli("schedule", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["NAME", "CRON", "TZ", "HANDLER"]
    assert "NEXT RUN" in lines[0] and "LAST RUN" in lines[0] and "LAST JOB" in lines[0]
    tick = next(line for line in lines if line.startswith("tick"))
    assert EVERY_SECOND in tick and "sched:tick:" in tick
    assert lines[-1] == "2 schedule(s)"
    code, out, _ = cli("schedule", "list", "--json")
    assert code == 0 and [s["name"] for s in json.loads(out)["schedules"]] == ["nightly", "tick"]

    assert cli("schedule", "remove", "tick")[:2] == (0, "removed schedule tick\n")
    code, out, _ = cli("schedule", "remove", "tick", "--json")
    assert code == 0 and json.loads(out) == {"removed": False}
    code, _, err = cli("schedule", "add", "bad", "* * * *", T + "noop")
    assert code == 1 and "invalid_argument" in err and "cron" in err
    code, _, err = cli("schedule", "add", "bad", "@daily", "no.such.handler")
    assert code == 1 and "unknown_handler" in err
    assert cli("schedule", "add", "only-a-name")[0] == 2
    assert cli("schedule")[0] == 2
    assert cli_main(["--socket", str(daemon.root / "nope.sock"), "schedule", "list"]) == 3


async def test_async_client_schedules(daemon: DaemonProc) -> None:
    async with AsyncClient(socket_path=daemon.socket) as c:
        view = await c.schedule_add("async", "*/5 * * * *", T + "add", args=[1, 2],
                                    timezone="Asia/Tokyo", max_retries=1)
        assert view["name"] == "async" and view["timezone"] == "Asia/Tokyo"
        assert [s["name"] for s in await c.schedule_list()] == ["async"]
        assert await c.schedule_remove("async") is True
        assert await c.schedule_remove("async") is False
        assert await c.schedule_list() == []
