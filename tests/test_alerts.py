"""Alerts end to end (docs/alerts.md): a real daemon, real workers, a real
HTTP receiver on 127.0.0.1 (the standard library's http.server on a thread)
and a real command that appends its stdin to a file.

Every wait is on a condition with a deadline; the rules run every 0.1 s here
(`[alerts] interval`) and repeats come after 1 s.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, T, wait_until

from jobd import config
from jobd.cli import main
from jobd.errors import ConfigError
from jobd_client import protocol as P

log = logging.getLogger("test_alerts")
SECRET = b"not a real secret, a test one"


class Receiver:
    """An Alertmanager-webhook receiver. `statuses`: the answers to give, in
    order (then 200); `hang`: while set, requests are held until released."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes, int]] = []   # headers, body, status given
        self.statuses: list[int] = []
        self.hang = threading.Event()
        self.arrived = threading.Event()      # a request came in (set before hanging)
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:          # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.set()
                if receiver.hang.is_set():
                    receiver.release.wait(30)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.got.append(({k.lower(): v for k, v in self.headers.items()},
                                         body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies answered 200, in order."""
        with self.lock:
            return [json.loads(body) for _, body, status in self.got if status == 200]

    def notices(self, rule: str) -> list[tuple[str, str]]:
        """(status, fingerprint) of each delivered notice of `rule`."""
        return [(b["status"], b["alerts"][0]["fingerprint"]) for b in self.delivered()
                if b["alerts"][0]["labels"]["alertname"] == rule]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def alerts_config(receiver: Receiver | None, command_file: Path | None = None,
                  repeat: float = 1.0, extra: str = "", secret_file: Path | None = None) -> str:
    lines = ["[alerts]", f"repeat_interval = {repeat}", "interval = 0.1"]
    if receiver is not None:
        lines.append(f'webhook_url = "{receiver.url}"')
    if secret_file is not None:
        lines.append(f'webhook_secret_file = "{secret_file}"')
    if command_file is not None:
        code = f"import sys; open({str(command_file)!r}, 'a').write(sys.stdin.read() + '\\n')"
        lines.append(f"command = {json.dumps([sys.executable, '-c', code])}")
    return "\n".join(lines) + "\n" + extra


def command_bodies(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


BURST = """
[alerts.rules.DeadLetterBurst]
count = 3
window_s = 4
"""


def test_dead_letter_burst_fires_repeats_resolves_to_webhook_and_command(
        make_daemon: Callable[..., DaemonProc], receiver: Receiver, tmp_path: Path) -> None:
    out = tmp_path / "command.out"
    d = make_daemon(config=alerts_config(receiver, out, repeat=1.0, extra=BURST))
    c = d.client()
    events = c.watch(events=[P.EV_ALERT_FIRING, P.EV_ALERT_RESOLVED])
    ids = [c.submit(T + "always_fail", max_retries=0) for _ in range(3)]
    assert all(c.wait(i, timeout=15).status == "dead_letter" for i in ids)

    firing = wait_until(c.alerts, what="the alert in the alerts op")
    assert [a["rule"] for a in firing] == ["DeadLetterBurst"]
    assert firing[0]["labels"]["handler"] == T + "always_fail"
    assert firing[0]["since"] and firing[0]["last_sent"]
    text = c.metrics(format="prometheus")
    assert 'jobd_alerts_firing{rule="DeadLetterBurst"} 1' in text
    assert 'jobd_alerts_firing{rule="QueueStalled"} 0' in text

    wait_until(lambda: ("resolved", firing[0]["fingerprint"]) in receiver.notices("DeadLetterBurst"),
               timeout=20, what="the resolved notice")
    got = receiver.notices("DeadLetterBurst")
    fp = firing[0]["fingerprint"]
    assert {f for _, f in got} == {fp}
    statuses = [s for s, _ in got]
    # Sent once, again every repeat_interval while it fired (the window is 4 s,
    # repeats every 1 s), then resolved once, last.
    assert statuses[0] == "firing" and statuses.count("firing") >= 2, statuses
    assert statuses.count("resolved") == 1 and statuses[-1] == "resolved", statuses
    body = receiver.delivered()[0]
    alert = body["alerts"][0]
    assert body["status"] == "firing" and alert["labels"]["severity"] == "warning"
    assert set(alert) >= {"labels", "annotations", "startsAt", "endsAt", "fingerprint"}

    # The command got the very same JSON objects, in the same order.
    wait_until(lambda: len(command_bodies(out)) == len(receiver.delivered()),
               what="the command to get every notice")
    assert command_bodies(out) == receiver.delivered()
    assert c.alerts() == []
    assert 'jobd_alerts_firing{rule="DeadLetterBurst"} 0' in c.metrics(format="prometheus")

    first, last = next(events), None
    for event in events:
        last = event
        if event.event == P.EV_ALERT_RESOLVED:
            break
    events.close()
    assert first.event == P.EV_ALERT_FIRING and first.data["rule"] == "DeadLetterBurst"
    assert last is not None and last.event == P.EV_ALERT_RESOLVED
    assert last.data["fingerprint"] == fp


STALLED = """
[queues.stuck]
workers = 0

[alerts.rules.QueueStalled]
for_s = 1
"""


def test_queue_stalled_no_second_page_after_kill9_and_the_resolve_still_arrives(
        make_daemon: Callable[..., DaemonProc], receiver: Receiver,
        capsys: pytest.CaptureFixture[str]) -> None:
    d = make_daemon(config=alerts_config(receiver, repeat=3600, extra=STALLED))
    c = d.client()
    job = c.submit(T + "echo", [1], queue="stuck")
    wait_until(lambda: receiver.notices("QueueStalled"), what="the firing notice")
    (alert,) = c.alerts()
    assert alert["rule"] == "QueueStalled" and alert["labels"]["queue"] == "stuck"
    capsys.readouterr()
    assert main(["--socket", d.socket, "alerts"]) == 0
    shown = capsys.readouterr().out
    assert "QueueStalled" in shown and "queue stuck" in shown and "1 alert(s) firing" in shown

    # The delivery is on disk before the kill: the outbox is empty again.
    state = Path(d.data_dir) / "alerts.json"
    wait_until(lambda: state.exists() and not json.loads(state.read_text())["outbox"]
               and json.loads(state.read_text())["firing"], what="the delivery to be saved")
    assert state.stat().st_mode & 0o777 == 0o600
    d.kill9()
    restarted = time.time()
    d.start()
    c = d.client()

    def evaluated_twice_since_restart() -> bool:
        reply = c.call(P.OP_ALERTS)
        at = reply.get("evaluated_at")
        return bool(at) and _epoch(at) > restarted + 0.25
    wait_until(evaluated_twice_since_restart, what="the rules to run after the restart")
    (again,) = c.alerts()
    assert again["fingerprint"] == alert["fingerprint"] and again["since"] == alert["since"]
    assert receiver.notices("QueueStalled") == [("firing", alert["fingerprint"])]

    assert c.cancel(job)
    wait_until(lambda: len(receiver.notices("QueueStalled")) == 2, what="the resolve")
    assert receiver.notices("QueueStalled") == [("firing", alert["fingerprint"]),
                                                ("resolved", alert["fingerprint"])]
    assert c.alerts() == []


def _epoch(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_webhook_retried_after_500_and_signed(make_daemon: Callable[..., DaemonProc],
                                              receiver: Receiver, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("whsec_" + base64.b64encode(SECRET).decode() + "\n")
    d = make_daemon(config=alerts_config(receiver, secret_file=secret_file))
    receiver.statuses = [500]
    capsys.readouterr()
    assert main(["--socket", d.socket, "alerts", "test"]) == 0
    assert "queued for webhook" in capsys.readouterr().out
    wait_until(receiver.delivered, what="the retried delivery")
    assert [status for _, _, status in receiver.got] == [500, 200]
    ids = {headers["webhook-id"] for headers, _, _ in receiver.got}
    assert len(ids) == 1                        # the same message, sent again
    for headers, body, _ in receiver.got:
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(SECRET, signed, hashlib.sha256).digest()).decode()
        assert headers["webhook-signature"] == "v1," + expected
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    (body,) = receiver.delivered()
    assert body["alerts"][0]["labels"]["alertname"] == "JobdTest"


def test_a_hanging_receiver_never_delays_jobs(make_daemon: Callable[..., DaemonProc],
                                              receiver: Receiver) -> None:
    d = make_daemon(config=alerts_config(receiver))
    c = d.client()
    receiver.hang.set()
    for _ in range(3):
        assert c.alert_test()["queued"]
    wait_until(receiver.arrived.is_set, what="a request to hang")
    took = []
    for i in range(40):
        start = time.perf_counter()
        job = c.submit(T + "echo", [i])
        assert c.wait(job, timeout=10).result == {"args": [i], "kwargs": {}}
        took.append(time.perf_counter() - start)
    log.info("submit+wait round trips while the receiver hangs: max %.1f ms, median %.1f ms",
             max(took) * 1e3, sorted(took)[len(took) // 2] * 1e3)
    print(f"round trips while the receiver hangs: max {max(took) * 1e3:.1f} ms, "
          f"median {sorted(took)[len(took) // 2] * 1e3:.1f} ms")
    assert max(took) < 2.0, took
    assert not receiver.got                 # the receiver still holds the first request
    receiver.hang.clear()
    receiver.release.set()
    wait_until(lambda: len(receiver.delivered()) >= 3, timeout=30, what="the held notices")


def test_alert_test_with_no_target_says_so(daemon: DaemonProc,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    reply = daemon.client().alert_test()
    assert reply["queued"] is False and reply["targets"] == []
    assert daemon.client().alerts() == []
    capsys.readouterr()
    assert main(["--socket", daemon.socket, "alerts", "test"]) == 1
    assert "no alert targets" in capsys.readouterr().out


@pytest.mark.parametrize("text, key", [
    ("[alerts.rules.Nope]\nenabled = false\n", "alerts.rules.Nope"),
    ("[alerts.rules.QueueStalled]\ncount = 3\n", "alerts.rules.QueueStalled.count"),
    ("[alerts]\ninterval = 10\n", "alerts.interval"),
    ('[alerts]\nwebhook_url = "ftp://x"\n', "alerts.webhook_url"),
    ('[alerts]\nwebhook_url = "http://x"\nwebhook_secret_file = "/nonexistent"\n',
     "alerts.webhook_secret_file"),
    ("[alerts]\ncommand = \"notify-send\"\n", "alerts.command"),
])
def test_bad_alert_config_is_refused(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "jobd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(str(path), env={})


def test_handler_quarantined_pages_and_release_resolves(make_daemon: Callable[..., DaemonProc],
                                                        receiver: Receiver) -> None:
    d = make_daemon(config=alerts_config(receiver, repeat=3600))
    c = d.client()
    c.call(P.OP_QUARANTINE, handler=T + "echo", reason="tested")
    wait_until(lambda: receiver.notices("HandlerQuarantined"), what="the page")
    (alert,) = c.alerts()
    assert alert["labels"]["handler"] == T + "echo"
    assert alert["labels"]["severity"] == "critical"
    assert "tested" in alert["annotations"]["description"]
    c.call(P.OP_RELEASE, handler=T + "echo")
    wait_until(lambda: len(receiver.notices("HandlerQuarantined")) == 2, what="the resolve")
    assert [s for s, _ in receiver.notices("HandlerQuarantined")] == ["firing", "resolved"]


def test_breaker_open_pages_after_for_s_and_resolves_when_it_closes(
        make_daemon: Callable[..., DaemonProc], receiver: Receiver, tmp_path: Path) -> None:
    down = tmp_path / "down"
    down.write_text("x")
    extra = (f'[alerts.rules.BreakerOpen]\nfor_s = 1\n'
             f'[handler."{T}fail_while_exists"]\nbreaker_failures = 1\nbreaker_cooldown = 600\n'
             f'max_retries = 5\nretry_delay = 0.1\n')
    d = make_daemon(workers=1, config=alerts_config(receiver, repeat=3600, extra=extra))
    c = d.client()
    job_id = c.submit(T + "fail_while_exists", [str(down)])
    opened = time.time()
    wait_until(lambda: receiver.notices("BreakerOpen"), what="the BreakerOpen page")
    assert time.time() - opened >= 1.0 - 0.2                 # not before for_s
    (alert,) = [a for a in c.alerts() if a["labels"]["alertname"] == "BreakerOpen"]
    assert alert["labels"]["handler"] == T + "fail_while_exists"
    down.unlink()
    c.call(P.OP_BREAKER_RESET, handler=T + "fail_while_exists")
    assert c.wait(job_id, timeout=20).status == "completed"
    wait_until(lambda: len(receiver.notices("BreakerOpen")) == 2, what="the resolve")
    assert [s for s, _ in receiver.notices("BreakerOpen")] == ["firing", "resolved"]


def test_storage_error_pages_on_a_full_disk_and_resolves_once_writes_succeed(
        make_daemon: Callable[..., DaemonProc], receiver: Receiver, tmp_path: Path) -> None:
    from test_storage_error import _fill, _tmpfs
    mounts = _tmpfs(tmp_path, "size=512k")
    small = next(mounts)
    try:
        d = make_daemon(start=False, workers=0, config=alerts_config(receiver, repeat=3600))
        d.data_dir = str(small / "data")
        d.start()
        c = d.client()
        c.submit(T + "add", [1, 1])
        filler = small / "filler"
        _fill(filler)
        with pytest.raises(Exception) as err:
            c.submit(T + "echo", args=["x" * 20000])
        assert getattr(err.value, "code", None) == "storage_error"
        wait_until(lambda: receiver.notices("StorageError"), what="the StorageError page")
        (alert,) = [a for a in c.alerts() if a["labels"]["alertname"] == "StorageError"]
        assert alert["labels"]["severity"] == "critical"
        filler.unlink()
        c.submit(T + "echo", args=["y"])                    # a write that succeeds
        wait_until(lambda: len(receiver.notices("StorageError")) == 2, what="the resolve")
        assert [s for s, _ in receiver.notices("StorageError")] == ["firing", "resolved"]
        d.stop()
    finally:
        next(mounts, None)
