"""The first hour with jobd, through the real daemon: handler modules found
from the project's directory, import errors that say where, a demo that
touches nothing of the user's, config and reload messages an operator can act
on, and errors that suggest the handler meant."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, T, wait_until

from jobd_client import Client, JobdError

TASKS = '''from jobd import handler

@handler
def shout(word):
    return word.upper()
'''


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: jobd installed, nothing on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "JOBD_SOCKET", "JOBD_DATA_DIR", "JOBD_CONFIG")}
    env.update(extra)
    return env


def serve(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "jobd", "serve", *args], cwd=cwd,
                            env=env or clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def project(tmp_path: Path) -> Path:
    proj = tmp_path / "myproject"
    (proj / "myapp").mkdir(parents=True)
    (proj / "myapp" / "__init__.py").write_text("")
    (proj / "myapp" / "tasks.py").write_text(TASKS)
    return proj


def test_handlers_are_imported_from_the_directory_jobd_runs_in(tmp_path):
    proj = project(tmp_path)
    sock = str(tmp_path / "j.sock")
    proc = serve(proj, "--handlers", "myapp.tasks", "--socket", sock,
                 "--data-dir", str(tmp_path / "data"), "--workers", "1")
    try:
        c = Client(socket_path=sock, timeout=30)
        wait_until(lambda: os.path.exists(sock) and c.hello(), 20, what="jobd to serve")
        done = c.wait(c.submit("myapp.tasks.shout", args=["hi"]), timeout=20)
        assert (done.status, done.result) == ("completed", "HI")
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out


def test_app_dir_names_the_project_from_elsewhere(tmp_path):
    proj = project(tmp_path)
    sock = str(tmp_path / "j.sock")
    proc = serve(tmp_path, "--handlers", "myapp.tasks", "--app-dir", str(proj), "--socket", sock,
                 "--data-dir", str(tmp_path / "data"), "--workers", "0")
    try:
        c = Client(socket_path=sock, timeout=30)
        wait_until(lambda: os.path.exists(sock) and c.hello(), 20, what="jobd to serve")
        assert "myapp.tasks.shout" in c.hello()["handlers"]
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


@pytest.mark.parametrize("source, where", [
    ("import json\n\n\ndef f(:\n    pass\n", "tasks.py, line 4"),              # a syntax error
    ("from jobd import handler\nx = 1\nraise RuntimeError('kaboom')\n", "tasks.py, line 3"),
])
def test_an_import_error_names_the_module_the_error_and_where(tmp_path, source, where):
    proj = project(tmp_path)
    (proj / "myapp" / "tasks.py").write_text(source)
    proc = serve(proj, "--handlers", "myapp.tasks", "--socket", str(tmp_path / "j.sock"),
                 "--data-dir", str(tmp_path / "data"), "--workers", "0")
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode not in (0, 78), out
    (line,) = [x for x in out.splitlines() if "cannot import" in x]
    assert "'myapp.tasks'" in line and where in line and "Traceback" not in out, out


def test_a_missing_module_says_where_it_looked(tmp_path):
    proc = serve(tmp_path, "--handlers", "nosuchapp.tasks", "--socket", str(tmp_path / "j.sock"),
                 "--data-dir", str(tmp_path / "data"), "--workers", "0")
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode not in (0, 78), out
    assert "No module named 'nosuchapp'" in out and "--app-dir" in out and str(tmp_path) in out, out


def test_a_module_with_no_handler_is_a_warning(tmp_path):
    proj = project(tmp_path)
    (proj / "myapp" / "empty.py").write_text("X = 1\n")
    sock = str(tmp_path / "j.sock")
    proc = serve(proj, "--handlers", "myapp.tasks,myapp.empty", "--socket", sock,
                 "--data-dir", str(tmp_path / "data"), "--workers", "0")
    try:
        c = Client(socket_path=sock, timeout=30)
        wait_until(lambda: os.path.exists(sock) and c.hello(), 20, what="jobd to serve")
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert "WARNING jobd: handler module 'myapp.empty' registers no handler" in out, out


def test_the_demo_leaves_a_running_jobd_and_the_users_data_alone(make_daemon, tmp_path):
    mine = make_daemon(workers=0)
    c = mine.client()
    before = c.metrics()["queue"]
    home = tmp_path / "home"
    env = clean_env(JOBD_SOCKET=mine.socket, HOME=str(home), XDG_STATE_HOME=str(home / "state"),
                    PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "jobd", "demo"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert c.metrics()["queue"] == before                # nothing reached the user's daemon
    assert not (home / "state").exists()                 # nor the default data dir


def test_an_unknown_socket_group_is_a_config_error(make_daemon):
    d = make_daemon(start=False, workers=0, config='[server]\nsocket_group = "no-such-group-jobd"\n')
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) == 78, d.log()
    assert "server.socket_group" in d.log()


def test_sighup_names_each_changed_key_it_cannot_apply(make_daemon):
    d = make_daemon(workers=None, config='[wal]\nfsync = "always"\n[workers]\ncount = 1\n')
    assert d.config_path is not None
    Path(d.config_path).write_text('[wal]\nfsync = "never"\n[workers]\ncount = 2\n'
                                   '[results]\nttl = 60\n')
    d.proc.send_signal(signal.SIGHUP)                    # type: ignore[union-attr]
    wait_until(lambda: "SIGHUP: config reloaded" in d.log(), 10, what="the reload")
    log = d.log()
    assert "config key 'wal.fsync' changed; it is not reloaded" in log, log
    assert "config key 'results.ttl' changed; it is not reloaded" in log, log
    assert "'workers.count' changed" not in log                         # that one applies
    wait_until(lambda: len(d.client().workers()) == 2, 10, what="the second worker")


def test_unknown_handler_suggests_the_registered_name(daemon):
    c = daemon.client()
    with pytest.raises(JobdError) as e:
        c.submit("noop")
    assert e.value.code == "unknown_handler"
    assert f"did you mean '{T}noop'" in e.value.message, e.value.message


def test_a_dead_letter_and_a_job_put_back_at_the_stop_are_logged(make_daemon, tmp_path):
    d = make_daemon(workers=1, config="[workers]\nshutdown_timeout = 0.5\n")
    c = d.client()
    dead = c.wait(c.submit(T + "always_fail", args=["it broke"], max_retries=0), timeout=15)
    assert dead.status == "dead_letter"
    wait_until(lambda: f"job {dead.id} ({T}always_fail) moved to the dead-letter queue after 1 "
                       "attempt(s): RuntimeError: it broke" in d.log(), 5, what="the warning")
    started = tmp_path / "started"
    blocked = c.submit(T + "block", args=[str(started)])
    wait_until(started.exists, 10, what="the blocking job to start")
    assert d.stop() == 0
    assert f"job {blocked} ({T}block) was still running at the stop: put back to pending" in d.log()


