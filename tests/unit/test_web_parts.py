"""The pure parts of jobd.web: settings, the guard's parsing, lanes, the
sampler's rates, schedules' next runs."""
from __future__ import annotations

import argparse
import calendar
from pathlib import Path

import pytest

from jobd.config import Config, WebConfig
from jobd.errors import ConfigError
from jobd.web.admin_api import next_runs
from jobd.web.guard import cookie_value, host_name, same_origin
from jobd.web.lanes import Lanes
from jobd.web.sampler import Sampler, sample_of, with_rates
from jobd.web.settings import build, is_loopback, parse_listen, read_token


def args(**kw: object) -> argparse.Namespace:
    base = {"listen": None, "uds": None, "socket": None, "token_file": None, "read_only": False}
    return argparse.Namespace(**{**base, **kw})


# --- settings --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8790", ("127.0.0.1", 8790)), ("[::1]:80", ("::1", 80)),
    ("localhost:0", ("localhost", 0)), ("0.0.0.0:9000", ("0.0.0.0", 9000)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8790", ":8790", "host:", "host:99999", "host:x"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="web.listen"):
        parse_listen(text)


def test_loopback() -> None:
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "10.0.0.1", "::", "example.com")))


def test_defaults_and_flags_over_config() -> None:
    cfg = Config()
    s = build(cfg, args())
    assert (s.host, s.port, s.read_only, s.token) == ("127.0.0.1", 8790, False, "")
    assert s.allowed_hosts == {"127.0.0.1", "localhost", "::1"}
    cfg.web = WebConfig(listen="127.0.0.2:1", allowed_hosts=["Jobs.Example"])
    s = build(cfg, args(listen="127.0.0.3:2", read_only=True))
    assert (s.host, s.port, s.read_only) == ("127.0.0.3", 2, True)
    assert s.allowed_hosts == {"jobs.example"}


def test_token_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a" * 32 + "\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        read_token(str(path))
    path.chmod(0o600)
    assert read_token(str(path)) == "a" * 32
    path.write_text("short")
    with pytest.raises(ConfigError, match="at least"):
        read_token(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(str(tmp_path / "missing"))


def test_non_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_file"):
        build(Config(), args(listen="0.0.0.0:8790"))
    path = tmp_path / "token"
    path.write_text("b" * 20)
    path.chmod(0o600)
    s = build(Config(), args(listen="0.0.0.0:8790", token_file=str(path)))
    assert s.token == "b" * 20 and "0.0.0.0" in s.allowed_hosts
    assert build(Config(), args(listen="0.0.0.0:8790", uds="/tmp/x.sock")).uds == "/tmp/x.sock"


# --- guard parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "host"), [
    (b"localhost:8790", "localhost"), (b"LOCALHOST", "localhost"), (b"[::1]:8790", "::1"),
    (b"[::1]", "::1"), (b"127.0.0.1", "127.0.0.1"), (b"", ""), (b"evil.com:1:2", "evil.com:1:2"),
])
def test_host_name(header: bytes, host: str) -> None:
    assert host_name(header) == host


def test_same_origin() -> None:
    assert same_origin(b"http://127.0.0.1:8790", b"127.0.0.1:8790")
    assert same_origin(b"https://Jobs.Example", b"jobs.example")
    assert not same_origin(b"http://evil.example", b"127.0.0.1:8790")
    assert not same_origin(b"null", b"127.0.0.1:8790")
    assert not same_origin(b"http://127.0.0.1:8791", b"127.0.0.1:8790")


def test_cookie_value() -> None:
    assert cookie_value(b"a=1; jobd_web_token=xyz; b=2", b"jobd_web_token") == b"xyz"
    assert cookie_value(b"a=1", b"jobd_web_token") is None


# --- lanes ---------------------------------------------------------------------------------------

def test_lanes_keep_the_last_jobs_per_worker() -> None:
    lanes = Lanes(per_worker=3)
    for i in range(5):
        lanes.on_event("job.started", {"job_id": f"j{i}", "worker_id": 1, "attempt": 1, "timestamp": "t"})
        lanes.on_event("job.completed", {"job_id": f"j{i}", "duration": 0.5, "timestamp": "u"})
    lanes.on_event("job.started", {"job_id": "f", "worker_id": 2, "attempt": 1, "timestamp": "t"})
    lanes.on_event("job.failed", {"job_id": "f", "will_retry": True, "error": "x", "timestamp": "u"})
    lanes.on_event("job.started", {"job_id": "r", "worker_id": 2, "attempt": 2, "timestamp": "v"})
    view = lanes.view()
    assert [e["job_id"] for e in view["1"]] == ["j2", "j3", "j4"]
    assert view["1"][0]["duration"] == 0.5 and view["1"][0]["status"] == "completed"
    assert [(e["job_id"], e["status"]) for e in view["2"]] == [("f", "retrying"), ("r", "running")]
    lanes.on_event("job.cancelled", {"job_id": "never-started"})        # ignored
    lanes.on_event("worker.started", {"job_id": None, "worker_id": 3})  # ignored


def test_lanes_running_is_bounded() -> None:
    lanes = Lanes(max_running=10)
    for i in range(100):
        lanes.on_event("job.started", {"job_id": f"j{i}", "worker_id": i % 4})
    assert len(lanes.running) == 10


# --- sampler -------------------------------------------------------------------------------------

def metrics(completed: int, failed: int, fsyncs: int) -> dict[str, object]:
    return {"queue": {"pending": 2, "completed": completed}, "workers": {"total": 4, "busy": 1},
            "throughput": {"1m": 1.0}, "wal": {"fsyncs": fsyncs, "bytes": 10, "bytes_written": 100},
            "totals": {"completed": completed, "failed": failed, "dead_letter": 0}}


def test_rates_between_samples() -> None:
    first = with_rates(sample_of(metrics(10, 0, 5), 100.0), None)
    assert first["failure_rate"] is None and first["counts"]["pending"] == 2
    second = with_rates(sample_of(metrics(40, 10, 15), 105.0), first)
    assert second["completed_per_s"] == 6.0 and second["failure_rate"] == 0.25
    assert second["fsyncs_per_s"] == 2.0
    restarted = with_rates(sample_of(metrics(0, 0, 0), 110.0), second)   # counters reset
    assert restarted["completed_per_s"] == 0.0 and restarted["fsyncs_per_s"] == 0.0


def test_history_keeps_a_sample_every_interval_for_an_hour() -> None:
    sent: list[dict[str, object]] = []
    sampler = Sampler(fetch=None, sink=sent.append, poll_s=2.0)  # type: ignore[arg-type]
    for i in range(4000):
        sampler.record({"t": i * 2.0, "available": True, "totals": {}, "wal": {"fsyncs": 0,
                                                                               "bytes_written": 0}})
    assert len(sent) == 4000
    assert len(sampler.history) == 720
    ts = [s["t"] for s in sampler.history]
    assert all(4.0 <= b - a <= 6.0 for a, b in zip(ts, ts[1:]))
    assert 3590 <= ts[-1] - ts[0] <= 3600


# --- schedules -----------------------------------------------------------------------------------

def test_next_runs_over_a_day() -> None:
    now = calendar.timegm((2026, 12, 6, 10, 0, 0))
    runs = next_runs("0 */6 * * *", "UTC", now)
    assert runs == ["2026-12-06T12:00:00.000000Z", "2026-12-06T18:00:00.000000Z",
                    "2026-12-07T00:00:00.000000Z", "2026-12-07T06:00:00.000000Z"]
    assert len(next_runs("* * * * *", "UTC", now)) == 288          # capped
    assert next_runs("not cron", "UTC", now) == []
