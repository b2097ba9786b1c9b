"""Unit tests for pure parts: backoff, frames, default paths, validation, cron-free bits."""
from __future__ import annotations

import logging
import random
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobd.config import Config, ConfigError, default_data_dir, load, validate
from jobd.core.job import iso, parse_iso, progress_view
from jobd.core.lifecycle import backoff, should_retry
from jobd.core.values import priority_value
from jobd.errors import OpError
from jobd.pool import frames as F
from jobd.server.args import parse_submit
from jobd_client.paths import default_socket_path


@pytest.mark.parametrize("failed,expected", [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 300.0)])
def test_backoff_grows_exponentially_and_caps(failed, expected):
    assert backoff(failed, 1.0, 2.0, 300.0, jitter=False) == expected


def test_backoff_jitter_stays_within_half_to_full():
    rng = random.Random(7)
    values = [backoff(3, 1.0, 2.0, 300.0, jitter=True, rng=rng) for _ in range(2000)]
    assert min(values) >= 2.0 and max(values) <= 4.0
    assert max(values) - min(values) > 1.5        # it really spreads


def test_backoff_survives_huge_exponents():
    assert backoff(5000, 1.0, 10.0, 60.0, jitter=False) == 60.0


def test_should_retry_counts_retries_after_first_attempt():
    assert [should_retry(n, 3) for n in (1, 2, 3, 4)] == [True, True, True, False]


def test_frames_round_trip_and_partial_input():
    data = F.frame(F.RUN, b"[1,2]") + F.frame(F.DONE, F.pack_done("job-1", b'{"a":1}'))
    buf = bytearray(data[:-3])
    frames, used = F.parse(buf)
    assert frames == [(F.RUN, b"[1,2]")]
    buf = bytearray(data)
    frames, used = F.parse(buf)
    assert used == len(data)
    assert F.unpack_done(frames[1][1]) == ("job-1", b'{"a":1}')


def test_iso_round_trip():
    ts = 1795857600.123456
    text = iso(ts)
    assert text == "2026-11-28T09:20:00.123456Z"
    assert abs(parse_iso(text) - ts) < 1e-6
    assert parse_iso("2026-11-28T08:00:00") == parse_iso("2026-11-28T08:00:00+00:00")


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.floats(min_value=0, max_value=253402300799.0, allow_nan=False),   # up to year 9999
    # around whole seconds, where rounding the microseconds carries into the second
    st.integers(0, 4_000_000_000).map(lambda s: s + 0.9999995),
    st.integers(0, 4_000_000_000).map(lambda s: s - 0.0000005),
    st.integers(0, 4_000_000_000).map(float)))
def test_iso_matches_datetime(ts):
    """The cached-prefix formatter gives exactly datetime's text (rounding included)."""
    expected = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso(ts) == expected


def test_progress_view_percentage():
    assert progress_view(1, 4, "x", 0)["percentage"] == 25.0
    assert progress_view(5, None, "", 0)["percentage"] is None
    assert progress_view(9, 4, "", 0)["percentage"] == 100.0


def test_priority_names_and_bounds():
    assert [priority_value(p) for p in ("low", "normal", "high", "critical", 0, 1000)] == \
        [0, 10, 20, 30, 0, 1000]
    for bad in (-1, 1001, "urgent", 1.5, True, None):
        with pytest.raises(OpError) as e:
            priority_value(bad)
        assert e.value.code == "invalid_argument" and "priority" in e.value.message


@pytest.mark.parametrize("field,value", [
    ("args", {}), ("kwargs", []), ("max_retries", -1), ("max_retries", 1.5),
    ("retry_delay", -1), ("retry_backoff", 0.5), ("timeout", 0), ("tags", []),
    ("name", 5), ("depends_on", "x"), ("delay", -3), ("run_at", "yesterday"),
    ("job_id", ""), ("job_id", "a b"), ("bogus", 1), ("retry_delay", float("nan")),
])
def test_submit_validation_names_the_field(field, value):
    req = {"op": "submit", "handler": "h", field: value}
    with pytest.raises(OpError) as e:
        parse_submit(req, 0.0)
    assert e.value.code == "invalid_argument"
    assert e.value.message.startswith(field), e.value.message


def test_delay_and_run_at_together_is_invalid():
    with pytest.raises(OpError):
        parse_submit({"handler": "h", "delay": 1, "run_at": "2026-01-01T00:00:00Z"}, 0.0)


def test_default_paths_follow_spec_order(monkeypatch):
    env = {"JOBD_DATA_DIR": "/a", "STATE_DIRECTORY": "/b", "XDG_STATE_HOME": "/c"}
    assert default_data_dir(env) == "/a"
    del env["JOBD_DATA_DIR"]
    assert default_data_dir(env) == "/b"
    del env["STATE_DIRECTORY"]
    assert default_data_dir(env) == "/c/jobd"
    for key in ("JOBD_SOCKET", "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/jobd")
    assert default_socket_path() == "/run/jobd/jobd.sock"
    monkeypatch.setenv("JOBD_SOCKET", "/x.sock")
    assert default_socket_path() == "/x.sock"


def test_config_precedence_file_env_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[server]\nsocket = "/file.sock"\n[workers]\ncount = 3\n[wal]\nfsync = "never"\n')
    env = {"JOBD_SOCKET": "/env.sock", "JOBD_DATA_DIR": "/env-data"}
    cfg = load(str(path), env=env, overrides={"workers.count": 1})
    assert cfg.server.socket == "/file.sock"         # file over the env-derived default
    assert cfg.data_dir == "/env-data"               # env-derived default: the file sets none
    assert cfg.workers.count == 1                    # flag over file
    assert cfg.wal.fsync == "never"                  # file over default
    cfg = load(str(path), env=env, overrides={"server.socket": "/flag.sock"})
    assert cfg.server.socket == "/flag.sock"         # flag over file and env
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load(str(empty), env=env).server.socket == "/env.sock"


@pytest.mark.parametrize("text,key", [
    ("[workers]\ncount = 'x'\n", "workers.count"),
    ("[workers]\nbogus = 1\n", "workers.bogus"),
    ("[nope]\na = 1\n", "nope"),
    ("[wal]\nfsync = 'sometimes'\n", "wal.fsync"),
    ("[retry]\njitter = 1\n", "retry.jitter"),
    ('[handler."x"]\nbad_option = 1\n', "bad_option"),
    ("[monitoring]\nmetrics_listen = 'nope'\n", "monitoring.metrics_listen"),
])
def test_bad_config_names_the_key(tmp_path, text, key):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(str(path), env={})
    assert key in str(e.value)


def test_defaults_match_spec():
    cfg = Config()
    validate(cfg)
    assert cfg.queue.max_size == 1_000_000
    assert (cfg.retry.max_retries, cfg.retry.retry_delay, cfg.retry.retry_backoff,
            cfg.retry.max_delay, cfg.retry.jitter) == (3, 1.0, 2.0, 300.0, True)
    assert (cfg.workers.heartbeat_interval, cfg.workers.heartbeat_timeout,
            cfg.workers.shutdown_timeout) == (5.0, 30.0, 30.0)
    assert cfg.server.max_request_bytes == 16 * 1024 * 1024
    assert cfg.results.ttl == 7 * 86400 and cfg.results.inline_max_bytes == 1 << 20
    assert cfg.results.compress_min_bytes == 64 * 1024
    assert (cfg.dead_letter.max_size, cfg.dead_letter.retention_days) == (10_000, 30)
    assert cfg.wal.fsync == "always" and cfg.server.socket_mode == 0o660


def test_gc_policy_freezes_replayed_state_and_collects_on_schedule():
    import gc

    from jobd.runtime.gcpolicy import FULL_INTERVAL, THRESHOLDS, GcPolicy
    now = [1000.0]
    old_threshold = gc.get_threshold()
    policy = GcPolicy(clock=lambda: now[0])
    try:
        policy.start()
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 0          # what existed at start is frozen
        full = gc.get_stats()[2]["collections"]
        now[0] += FULL_INTERVAL / 2
        policy.maybe_collect()
        assert gc.get_stats()[2]["collections"] == full      # not due yet
        now[0] += FULL_INTERVAL
        policy.maybe_collect()
        assert gc.get_stats()[2]["collections"] == full + 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*old_threshold)


def test_job_ids_are_unique_hex_and_differ_between_starts():
    from jobd.core.job import JobIds
    a, b = JobIds(), JobIds()
    ids = [a.next() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert a.next()[:20] != b.next()[:20]


def test_log_records_are_one_line_each_traceback_included():
    from jobd.main import OneLineFormatter
    fmt = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("jobd", logging.ERROR, __file__, 1, "op %s failed", ("x",),
                                   exc_info=sys.exc_info())
    text = fmt.format(record)
    assert "\n" not in text
    assert text.startswith("ERROR jobd: op x failed | Traceback (most recent call last):")
    assert text.endswith("ValueError: bad | thing")


def test_result_sweep_spares_files_being_written(tmp_path):
    """A purge or expiry sweep runs while a large result is being stored: the
    file (still `.tmp`, or renamed but not yet referenced) must survive."""
    from jobd.storage.results import ResultStore, file_stem
    store = ResultStore(str(tmp_path), inline_max=10, compress_min=100)
    busy, gone = file_stem("busy-job"), file_stem("gone-job")
    store.storing.add(busy)
    for name in (busy + ".json.z.tmp", busy + ".json", gone + ".json"):
        (tmp_path / name).write_bytes(b"1")
    assert store.forget_missing(lambda stem: False) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [busy + ".json", busy + ".json.z.tmp"]
