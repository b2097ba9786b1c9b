"""Startup configuration and failures of the real `jobd serve` (docs/configuration.md, docs/durability.md).

Config errors exit 78 naming the key; other startup failures exit non-zero
with one clear line; files and the socket get the documented modes.
"""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from conftest import DaemonProc

EX_CONFIG = 78


def failed_start(d: DaemonProc, timeout: float = 20.0) -> tuple[int, str]:
    """Start a daemon that is expected to fail; (exit code, its output)."""
    d.start(wait=False)
    assert d.proc is not None
    code = d.proc.wait(timeout)
    return code, d.log()


def problem_lines(out: str) -> list[str]:
    """The lines a failed startup printed at error level or above."""
    return [line for line in out.splitlines()
            if line.startswith("jobd:") or " CRITICAL " in line or " ERROR " in line]


# --- config errors: exit 78 naming the key ---------------------------------------------

@pytest.mark.parametrize("toml, key", [
    ("[workers]\nfoo = 1\n", "workers.foo"),
    ("[workers]\ncount = \"x\"\n", "workers.count"),
    ("[server]\nmax_request_bytes = 1.5\n", "server.max_request_bytes"),
    ("[retry]\njitter = \"yes\"\n", "retry.jitter"),
    ("[queue]\nmax_size = true\n", "queue.max_size"),
    ("handlers = \"jobd_testhandlers\"\n", "handlers"),
    ("[bogus]\nx = 1\n", "bogus"),
    ("mystery = 1\n", "mystery"),
    ("[wal]\nfsync = \"sometimes\"\n", "wal.fsync"),
    ("[wal]\nsegment_bytes = 10\n", "wal.segment_bytes"),
    ("[queue]\nmax_size = 0\n", "queue.max_size"),
    ("[handler.\"x.y\"]\nretries = 3\n", "retries"),
    ("[server]\nsocket_mode = \"0660\"\n", "server.socket_mode"),
    ("[server]\nbusy_poll_us = 20000\n", "server.busy_poll_us"),
    ("[handler.\"x.y\"]\ntimeout = \"x\"\n", 'handler."x.y".timeout'),
    ("[handler.\"x.y\"]\nmax_retries = \"5\"\n", 'handler."x.y".max_retries'),
    ("[handler.\"x.y\"]\npriority = \"urgent\"\n", 'handler."x.y".priority'),
    ("[handler.\"x.y\"]\nmax_concurrency = 1.5\n", 'handler."x.y".max_concurrency'),
    ("[handler.\"x.y\"]\nmax_concurrency = 0\n", 'handler."x.y".max_concurrency'),
    ("[queue]\nmax_args_bytes = 0\n", "queue.max_args_bytes"),
    ("[handler.\"x.y\"]\nretry_backoff = 0.5\n", 'handler."x.y".retry_backoff'),
    ("[handler.\"x.y\"]\njitter = 1\n", 'handler."x.y".jitter'),
    ("[handler.\"x.y\"]\nname = \"other\"\n", 'handler."x.y".name'),
    ("[handler.\"jobd_testhandlers.nosuch\"]\nmax_retries = 1\n", 'handler."jobd_testhandlers.nosuch"'),
    ("[workers]\ncount = -1\n", "workers.count"),
    ("[[schedule]]\nname = \"n\"\ncron = \"* * * * *\"\nhandler = \"jobd_testhandlers.nosuch\"\n",
     "schedule"),
])
def test_bad_config_exits_78_naming_the_key(make_daemon, toml, key):
    d = make_daemon(start=False, workers=0, config=toml)
    code, out = failed_start(d)
    assert code == EX_CONFIG, out
    lines = problem_lines(out)
    assert len(lines) == 1, out
    assert key in lines[0], out
    assert "Traceback" not in out
    assert not os.path.exists(d.socket)
    assert not os.path.exists(d.data_dir), "a config error must not touch the data dir"


def test_toml_syntax_error_exits_78(make_daemon):
    d = make_daemon(start=False, workers=0, config="[workers\ncount = 1\n")
    code, out = failed_start(d)
    assert code == EX_CONFIG and "Traceback" not in out
    assert d.config_path is not None and d.config_path in out


def test_missing_config_file_exits_78(make_daemon):
    d = make_daemon(start=False, workers=0, extra=["--config", "/nonexistent/jobd.toml"])
    code, out = failed_start(d)
    assert code == EX_CONFIG and "/nonexistent/jobd.toml" in out


def test_bad_flag_value_is_a_usage_or_config_error(make_daemon):
    d = make_daemon(start=False, workers=0, fsync="sometimes")
    code, out = failed_start(d)
    assert code in (2, EX_CONFIG) and "fsync" in out


# --- flags over config over defaults ----------------------------------------------------

def test_flags_override_the_config_file(make_daemon):
    toml = '[workers]\ncount = 3\n[wal]\nfsync = "always"\n'
    d = make_daemon(workers=1, fsync="never", config=toml)
    c = d.client(timeout=20)
    assert _eventually_workers(c, 1)
    assert c.scale(1)["previous"] == 1       # the pool's target was 1, not 3
    assert c.metrics()["wal"]["fsync_mode"] == "never"


def test_config_file_overrides_defaults(make_daemon):
    toml = ('[workers]\ncount = 3\n[wal]\nfsync = "interval"\n'
            '[retry]\nmax_retries = 7\nretry_delay = 0.25\n')
    d = make_daemon(workers=None, config=toml)
    c = d.client(timeout=20)
    assert _eventually_workers(c, 3)
    assert c.scale(3)["previous"] == 3
    assert c.metrics()["wal"]["fsync_mode"] == "interval"
    job = c.call("status", job_id=c.submit("jobd_testhandlers.sleep", args=[0], delay=3600))["job"]
    assert job["max_retries"] == 7 and job["retry_delay"] == 0.25


def _eventually_workers(c, n: int) -> bool:
    from conftest import wait_until
    wait_until(lambda: len(c.workers()) == n, what=f"{n} workers")
    return True


# --- other startup failures: non-zero, one clear line ------------------------------------

def test_socket_in_use_by_a_live_daemon(make_daemon):
    live = make_daemon(workers=0)
    second = make_daemon(start=False, workers=0)
    second.socket = live.socket
    code, out = failed_start(second)
    assert code not in (0, EX_CONFIG), out
    lines = problem_lines(out)
    assert len(lines) == 1 and live.socket in lines[0] and "in use" in lines[0], out
    # the live daemon and its socket are untouched
    assert stat.S_ISSOCK(os.lstat(live.socket).st_mode)
    assert live.client().hello()["protocol"] == 1


def test_data_dir_in_use_by_a_live_daemon(make_daemon):
    live = make_daemon(workers=0)
    second = make_daemon(start=False, workers=0)
    second.data_dir = live.data_dir
    code, out = failed_start(second)
    assert code not in (0, EX_CONFIG), out
    lines = problem_lines(out)
    assert len(lines) == 1 and live.data_dir in lines[0], out
    assert not os.path.exists(second.socket)
    assert live.client().hello()["protocol"] == 1


def test_stale_socket_file_is_replaced(make_daemon):
    d = make_daemon(start=False, workers=0)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(d.socket)
    s.close()                      # the file stays; nobody listens on it
    assert stat.S_ISSOCK(os.lstat(d.socket).st_mode)
    d.start()
    assert d.client().hello()["protocol"] == 1


def test_socket_path_occupied_by_a_regular_file(make_daemon):
    d = make_daemon(start=False, workers=0)
    Path(d.socket).write_text("precious")
    code, out = failed_start(d)
    assert code not in (0, EX_CONFIG)
    lines = problem_lines(out)
    assert len(lines) == 1 and d.socket in lines[0], out
    assert Path(d.socket).read_text() == "precious", "a non-socket file must never be removed"


def test_data_dir_not_creatable(make_daemon, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    d = make_daemon(start=False, workers=0)
    d.data_dir = str(blocker / "data")
    code, out = failed_start(d)
    assert code not in (0, EX_CONFIG), out
    lines = problem_lines(out)
    assert len(lines) == 1 and d.data_dir in lines[0], out
    assert "Traceback" not in out
    assert not os.path.exists(d.socket)


@pytest.mark.parametrize("module", ["no_such_module_for_jobd", "jobd_testhandlers,nope.nope"])
def test_handler_module_import_error(make_daemon, module):
    d = make_daemon(start=False, workers=0, handlers=module)
    code, out = failed_start(d)
    assert code not in (0, EX_CONFIG), out
    lines = problem_lines(out)
    assert len(lines) == 1 and "handler module" in lines[0], out
    assert module.split(",")[-1].split(".")[0] in lines[0], out
    assert "Traceback" not in out
    assert not os.path.exists(d.socket)


def test_handler_module_that_raises_on_import(make_daemon, tmp_path):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "broken_handlers.py").write_text("raise RuntimeError('kaboom at import')\n")
    from conftest import ROOT, SUPPORT
    d = make_daemon(start=False, workers=0, handlers="broken_handlers",
                    env={"PYTHONPATH": os.pathsep.join([str(mods), str(SUPPORT), str(ROOT)])})
    code, out = failed_start(d)
    assert code not in (0, EX_CONFIG), out
    lines = problem_lines(out)
    assert len(lines) == 1 and "kaboom at import" in lines[0], out


# --- file modes ------------------------------------------------------------------------

def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_file_modes_by_default(make_daemon):
    old = os.umask(0o002)          # a permissive umask must not loosen anything
    try:
        d = make_daemon(workers=0)
    finally:
        os.umask(old)
    c = d.client()
    c.submit("jobd_testhandlers.noop")
    assert _mode(d.socket) == 0o660
    assert _mode(d.data_dir) == 0o700
    wal = Path(d.data_dir) / "wal"
    assert _mode(wal) & 0o077 == 0, oct(_mode(wal))
    files = [p for p in Path(d.data_dir).rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files), files
    for p in files:
        assert _mode(p) == 0o600, (p, oct(_mode(p)))
    for p in Path(d.data_dir).rglob("*"):
        if p.is_dir():
            assert _mode(p) & 0o077 == 0, (p, oct(_mode(p)))


def test_missing_parents_of_the_data_dir_are_created_0700_under_umask_0(make_daemon):
    d = make_daemon(start=False, workers=0)
    d.data_dir = str(Path(d.root) / "x" / "y" / "data")
    existing = _mode(d.root)
    old = os.umask(0)
    try:
        d.start()
    finally:
        os.umask(old)
    for path in (Path(d.root) / "x", Path(d.root) / "x" / "y", Path(d.data_dir)):
        assert _mode(path) == 0o700, (path, oct(_mode(path)))
    assert _mode(d.root) == existing                      # an existing directory is left alone


def test_socket_mode_from_config(make_daemon):
    d = make_daemon(workers=0, config="[server]\nsocket_mode = 0o600\n")
    assert _mode(d.socket) == 0o600
    assert d.client().hello()["protocol"] == 1


def test_socket_removed_on_graceful_stop(make_daemon):
    d = make_daemon(workers=0)
    d.close_clients()
    assert d.stop() == 0
    assert not os.path.exists(d.socket)


def test_handler_overrides_in_the_config_apply_to_that_handlers_jobs(make_daemon):
    d = make_daemon(workers=1, config=(
        '[handler."jobd_testhandlers.always_fail"]\n'
        'max_retries = 0\npriority = "high"\ntimeout = 12.5\nretry_delay = 0.25\nretry_backoff = 3.0\n'))
    c = d.client()
    job = c.wait(c.submit("jobd_testhandlers.always_fail"), timeout=15)
    assert job.status == "dead_letter" and job.attempts == 1       # max_retries = 0
    assert (job.priority, job.timeout, job.max_retries, job.retry_delay, job.retry_backoff) == \
        (20, 12.5, 0, 0.25, 3.0)
    other = c.wait(c.submit("jobd_testhandlers.add", args=[1, 2]), timeout=15)
    assert (other.priority, other.timeout, other.max_retries) == (10, None, 3)   # untouched


@pytest.mark.parametrize("option, key", [("timeout='soon'", "timeout"),
                                         ("max_concurrency=0", "max_concurrency")])
def test_a_handler_module_with_a_bad_option_type_fails_startup_in_one_line(make_daemon, tmp_path,
                                                                            option, key):
    mod = tmp_path / "badopts_handlers.py"
    mod.write_text(f"from jobd import handler\n\n@handler({option})\ndef f():\n    pass\n")
    d = make_daemon(start=False, workers=0, handlers="badopts_handlers",
                    env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    code, out = failed_start(d)
    assert code != 0 and code != EX_CONFIG, out
    lines = problem_lines(out)
    assert len(lines) == 1 and key in lines[0], out
    assert "Traceback" not in out
