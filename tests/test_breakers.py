"""Circuit breakers, quarantine and poison jobs through the real daemon
(docs/flow-control.md, "Circuit breakers and quarantine")."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
from conftest import TEST_HANDLERS, T, wait_until

from jobd_client import JobdError

SERVICE = T + "fail_while_exists"


def row(c, name: str) -> dict:
    return next(h for h in c.call("handlers")["handlers"] if h["name"] == name)


def status(c, job_id: str) -> dict:
    return c.call("status", job_id=job_id)["job"]


class Events:
    """Every event of a watch, collected by a thread."""

    def __init__(self, d) -> None:
        self.items: list = []
        self.watch = d.client().watch()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for ev in self.watch:
                self.items.append(ev)
        except Exception:   # noqa: BLE001 - the connection closes at the end
            pass

    def named(self, name: str) -> list:
        return [e for e in list(self.items) if e.event == name]


def breaker_config(**opts) -> str:
    body = "\n".join(f"{k} = {v}" for k, v in opts.items())
    return f'[handler."{SERVICE}"]\nmax_retries = 20\nretry_delay = 0.2\njitter = false\n{body}\n'


def test_the_breaker_opens_holds_lets_one_trial_through_and_closes(make_daemon, tmp_path):
    down = tmp_path / "down"
    down.write_text("x")
    config = breaker_config(breaker_failures=3, breaker_cooldown=1.0, breaker_max_cooldown=8)
    d = make_daemon(workers=8, config=config)
    c = d.client()
    ev = Events(d)
    wait_until(lambda: len(c.workers()) == 8, what="eight workers")
    first = [c.submit(SERVICE, [str(down)]) for _ in range(3)]
    wait_until(lambda: ev.named("handler.breaker_opened"), what="the breaker to open")
    opened = ev.named("handler.breaker_opened")[0].data
    assert opened["handler"] == SERVICE and opened["cooldown"] == 1.0
    assert opened["failures"] == 3 and "still exists" in opened["last_error"]
    later = [c.submit(SERVICE, [str(down)]) for _ in range(20)]
    view = status(c, later[0])
    assert view["status"] == "pending" and view["attempts"] == 0
    assert view["held"]["reason"] == "breaker_open" and view["held"]["until"] is not None
    r = row(c, SERVICE)
    assert r["state"] == "breaker_open" and r["breaker"]["state"] == "open"
    assert r["breaker"]["next_trial_at"] is not None and r["held"] >= 20
    other = c.submit(T + "add", [1, 2])                    # other handlers run on
    assert c.wait(other, timeout=10).status == "completed"
    # After the cooldown one trial starts; it fails: open again, cooldown doubled.
    wait_until(lambda: len(ev.named("handler.breaker_opened")) >= 2, 10, what="the re-open")
    assert ev.named("handler.breaker_opened")[1].data["cooldown"] == 2.0
    down.unlink()                                          # the service is back
    wait_until(lambda: ev.named("handler.breaker_closed"), 15, what="the breaker to close")
    for job_id in first + later:
        assert c.wait(job_id, timeout=30).status == "completed"
    assert row(c, SERVICE)["state"] == "ok"
    assert c.metrics()["queue"]["dead_letter"] == 0
    # Between each half-open and the next open/close, exactly one job started.
    seq = [e for e in ev.items if e.event in ("handler.breaker_half_open",
                                             "handler.breaker_opened",
                                             "handler.breaker_closed", "job.started")]
    windows, current = [], None
    for e in seq:
        if e.event == "handler.breaker_half_open":
            current = 0
        elif e.event == "job.started" and current is not None:
            current += 1
        elif e.event != "job.started" and current is not None:
            windows.append(current)
            current = None
    assert windows and all(n == 1 for n in windows), windows
    text = c.metrics(format="prometheus")
    assert f'jobd_breaker_trips_total{{handler="{SERVICE}"}} 2' in text
    assert f'jobd_handler_state{{handler="{SERVICE}",state="ok"}} 1' in text


def test_an_open_breaker_stays_open_across_kill_9(make_daemon, tmp_path):
    down = tmp_path / "down"
    down.write_text("x")
    d = make_daemon(workers=2, config=breaker_config(breaker_failures=2, breaker_cooldown=4.0))
    c = d.client()
    ids = [c.submit(SERVICE, [str(down)]) for _ in range(2)]
    wait_until(lambda: row(c, SERVICE)["state"] == "breaker_open", what="the breaker to open")
    trial_at = row(c, SERVICE)["breaker"]["next_trial_at"]
    down.unlink()
    d.kill9()
    d.start()
    c = d.client()
    r = row(c, SERVICE)
    assert r["state"] == "breaker_open" and r["breaker"]["next_trial_at"] == trial_at
    assert {status(c, j)["held"]["reason"] for j in ids if status(c, j)["status"] == "pending"} \
        <= {"breaker_open"}
    for job_id in ids:
        assert c.wait(job_id, timeout=30).status == "completed"
    assert row(c, SERVICE)["state"] == "ok"


def test_the_failure_rate_opens_it_and_permanent_errors_never_do(make_daemon):
    config = (f'[handler."{T}flaky_even"]\nbreaker_failures = 10\nbreaker_rate = 0.4\n'
              f'breaker_min_calls = 10\nbreaker_window = 30\nmax_retries = 0\n'
              f'[handler."{T}permanent"]\nbreaker_failures = 3\n')
    d = make_daemon(workers=1, config=config)
    c = d.client()
    for _ in range(30):
        c.call("submit", handler=T + "permanent", args=["no"])
    ids = [c.submit(T + "flaky_even", [i]) for i in range(12)]
    wait_until(lambda: row(c, T + "flaky_even")["state"] == "breaker_open", what="rate trip")
    b = row(c, T + "flaky_even")["breaker"]
    assert b["failures"] < 10 and b["failure_rate"] >= 0.4
    assert row(c, T + "permanent")["state"] == "ok"
    assert c.metrics()["queue"]["failed"] == 30
    assert any(status(c, j)["held"] for j in ids if status(c, j)["status"] == "pending")


def test_repeated_trips_quarantine_the_handler_until_released(make_daemon, tmp_path):
    down = tmp_path / "down"
    down.write_text("x")
    config = breaker_config(breaker_failures=1, breaker_cooldown=0.3, quarantine_after=3)
    d = make_daemon(workers=2, config=config)
    c = d.client()
    with d.client().watch(events=["handler.quarantined"]) as events:
        ids = [c.submit(SERVICE, [str(down)]) for _ in range(5)]
        quarantined = next(events)
    assert quarantined.data["handler"] == SERVICE and "3 times" in quarantined.data["reason"]
    r = row(c, SERVICE)
    assert r["state"] == "quarantined" and "3 times" in r["quarantine"]["reason"]
    wait_until(lambda: all(status(c, j)["status"] == "pending" for j in ids), what="all held")
    assert {status(c, j)["held"]["reason"] for j in ids} == {"quarantined"}
    down.unlink()
    d.stop()
    d.start()
    c = d.client()
    assert row(c, SERVICE)["state"] == "quarantined"
    assert {status(c, j)["held"]["reason"] for j in ids} == {"quarantined"}
    assert c.call("release", handler=SERVICE) == {"released": True}
    for job_id in ids:
        assert c.wait(job_id, timeout=20).status == "completed"
    r = row(c, SERVICE)
    assert r["state"] == "ok" and r["quarantine"] is None
    assert r["breaker"]["trips_last_hour"] == 0
    assert c.call("release", handler=SERVICE) == {"released": False}


def test_quarantine_and_breaker_reset_by_hand(make_daemon, tmp_path):
    down = tmp_path / "down"
    down.write_text("x")
    d = make_daemon(workers=1, config=breaker_config(breaker_failures=1, breaker_cooldown=600))
    c = d.client()
    job_id = c.submit(SERVICE, [str(down)])
    wait_until(lambda: row(c, SERVICE)["state"] == "breaker_open", what="the breaker to open")
    down.unlink()
    assert c.call("breaker_reset", handler=SERVICE) == {"reset": True}
    assert c.wait(job_id, timeout=20).status == "completed"
    assert c.call("breaker_reset", handler=SERVICE) == {"reset": False}
    reply = c.call("quarantine", handler=T + "add", reason="bad deploy")
    assert reply["quarantined"] is True and reply["quarantine"]["reason"] == "bad deploy"
    held = c.submit(T + "add", [1, 1])
    assert status(c, held)["held"]["reason"] == "quarantined"
    for args, code in [({}, "invalid_argument"), ({"handler": "nope"}, "not_found")]:
        for op in ("quarantine", "release", "breaker_reset"):
            with pytest.raises(JobdError) as e:
                c.call(op, **args)
            assert e.value.code == code, (op, args)
    assert c.call("release", handler=T + "add") == {"released": True}
    assert c.wait(held, timeout=20).status == "completed"


def test_poison_jobs_go_to_dead_letter_and_crashing_jobs_quarantine(make_daemon):
    config = f'[handler."{T}kill_self"]\nmax_retries = 5\nretry_delay = 0.05\njitter = false\n'
    d = make_daemon(workers=2, config=config)
    c = d.client()
    poison = c.call("submit", handler=T + "kill_self", args=[int(signal.SIGKILL)])["job_id"]
    job = c.wait(poison, timeout=30)
    assert job.status == "dead_letter" and job.error.startswith("poison:")
    assert job.attempts == 2
    ok = [c.submit(T + "add", [i, i]) for i in range(10)]        # other handlers unaffected
    assert [c.wait(j, timeout=20).status for j in ok] == ["completed"] * 10
    wait_until(lambda: len(c.workers()) == 2, what="the pool full again")
    more = [c.call("submit", handler=T + "kill_self", args=[int(signal.SIGKILL)])["job_id"]
            for _ in range(3)]
    wait_until(lambda: row(c, T + "kill_self")["state"] == "quarantined", 30,
               what="the quarantine")
    assert "in a row killed their worker" in row(c, T + "kill_self")["quarantine"]["reason"]
    assert any(status(c, j)["status"] == "pending" for j in more)
    wait_until(lambda: len(c.workers()) == 2, what="the pool full again")


def test_jobs_of_a_handler_the_new_code_lacks_are_held_quarantined(make_daemon, tmp_path):
    d = make_daemon(workers=0)
    c = d.client()
    ids = [c.submit(T + "add", [i, 1]) for i in range(3)]
    d.stop()
    d.handlers = "jobd.examples"
    d.start()
    c = d.client()
    views = [status(c, j) for j in ids]
    assert {v["status"] for v in views} == {"pending"}
    assert {v["held"]["reason"] for v in views} == {"quarantined"} and \
        {v["attempts"] for v in views} == {0}
    d.stop()
    d.handlers = TEST_HANDLERS
    d.workers = 1
    d.start()
    c = d.client()
    assert [c.wait(j, timeout=20).status for j in ids] == ["completed"] * 3
    assert Path(d.data_dir).exists()


def test_cli_and_client_drive_breakers_and_quarantine(make_daemon, tmp_path):
    import subprocess
    import sys

    from jobd_client import AsyncClient
    down = tmp_path / "down"
    down.write_text("x")
    d = make_daemon(workers=1, config=breaker_config(breaker_failures=1, breaker_cooldown=600))
    c = d.client()

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobd.cli", "--socket", d.socket, *argv],
                              capture_output=True, text=True, timeout=30)

    job_id = c.submit(SERVICE, [str(down)])
    wait_until(lambda: row(c, SERVICE)["state"] == "breaker_open", what="the breaker to open")
    run = cli("handlers")
    assert run.returncode == 0 and "breaker_open" in run.stdout and "NEXT TRIAL" in run.stdout
    top = cli("top", "--once")
    assert "breaker open" in top.stdout, top.stdout
    down.unlink()
    run = cli("handlers", "reset", SERVICE)
    assert run.returncode == 0 and "closed" in run.stdout
    assert c.wait(job_id, timeout=20).status == "completed"
    run = cli("handlers", "quarantine", T + "add", "--reason", "bad deploy")
    assert run.returncode == 0 and "bad deploy" in run.stdout
    assert c.quarantine(T + "add")["reason"] == "bad deploy"
    assert "quarantined since" in cli("handlers").stdout
    assert cli("handlers", "release", "nope").returncode == 1
    run = cli("handlers", "release", T + "add")
    assert run.returncode == 0 and "released" in run.stdout
    assert c.release(T + "add") is False and c.breaker_reset(SERVICE) is False

    async def via_async() -> tuple:
        async with AsyncClient(socket_path=d.socket) as ac:
            q = await ac.quarantine(T + "noop", reason="x")
            return q, await ac.release(T + "noop"), await ac.breaker_reset(T + "noop")
    import asyncio
    q, released, reset = asyncio.run(via_async())
    assert q["reason"] == "x" and released is True and reset is False
