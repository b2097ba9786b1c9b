"""The README followed literally on a fresh install, in a project directory of
the user's own (handler package, no PYTHONPATH): the distribution installs
under its own name, `jobd demo` is self-contained, and `jobd serve` finds the
project's handlers.

Slow (it builds and installs the package into a new venv): `-m "not slow"`
leaves it out of a quick run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

ROOT = Path(__file__).parent.parent
TASKS = '''from jobd import handler

@handler
def shout(word):
    print("shouting", word)
    return word.upper()
'''

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}: {res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A new venv with the package installed from the checkout, as the README says."""
    base = tmp_path_factory.mktemp("fresh")
    env = {k: v for k, v in os.environ.items() if k not in
           ("PYTHONPATH", "JOBD_SOCKET", "JOBD_DATA_DIR", "JOBD_CONFIG", "VIRTUAL_ENV")}
    env["HOME"] = str(base / "home")
    env["XDG_RUNTIME_DIR"] = str(base / "run")
    env["XDG_STATE_HOME"] = str(base / "state")
    (base / "run").mkdir(mode=0o700)
    run([sys.executable, "-m", "venv", str(base / ".venv")], base, env)
    run([str(base / ".venv" / "bin" / "pip"), "install", "-q", str(ROOT)], base, env, 600)
    return base, env


def test_the_distribution_is_jobd_queue_and_the_commands_are_jobd(installed):
    base, env = installed
    out = run([str(base / ".venv" / "bin" / "pip"), "show", "jobd-queue"], base, env)
    assert "Name: jobd-queue" in out
    assert "jobd" in run([str(base / ".venv" / "bin" / "jobd"), "--version"], base, env)


def test_the_demo_runs_on_its_own_and_leaves_nothing_behind(installed):
    base, env = installed
    out = run([str(base / ".venv" / "bin" / "jobd"), "demo"], base, env, 120)
    assert "completed" in out and "Traceback" not in out
    assert not (base / "state" / "jobd").exists()            # the user's data dir is untouched


def test_a_project_directory_serves_its_own_handlers(installed):
    base, env = installed
    proj = base / "myproject"
    (proj / "myapp").mkdir(parents=True)
    (proj / "myapp" / "__init__.py").write_text("")
    (proj / "myapp" / "tasks.py").write_text(TASKS)
    bin_ = base / ".venv" / "bin"
    daemon = subprocess.Popen([str(bin_ / "jobd"), "serve", "--handlers", "myapp.tasks",
                               "--workers", "1"], cwd=proj, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def answers() -> bool:                                 # the default socket, found by the CLI
            assert daemon.poll() is None, "jobd exited"
            return subprocess.run([str(bin_ / "jobd-cli"), "ping"], cwd=base, env=env,
                                  capture_output=True).returncode == 0
        wait_until(answers, 30, interval=0.1, what="jobd to answer jobd-cli ping")
        out = run([str(bin_ / "jobd-cli"), "submit", "myapp.tasks.shout", "hi", "--wait"],
                  base, env, 60)
        assert '"HI"' in out, out
        (job,) = json.loads(run([str(bin_ / "jobd-cli"), "--json", "list"], base, env))["jobs"]
        job_id = job["id"]
        assert "shouting hi" in run([str(bin_ / "jobd-cli"), "logs", job_id], base, env)
    finally:
        daemon.send_signal(signal.SIGTERM)
        log = daemon.communicate(timeout=60)[0].decode()
    assert daemon.returncode == 0, log


def test_the_web_files_ship_and_jobd_web_names_its_extra(installed):
    # Installed without the `web` extra: the page and the API description are in the
    # package all the same, and `jobd web` says which extra it needs.
    base, env = installed
    bin_ = base / ".venv" / "bin"
    probe = ("from importlib.resources import files; w = files('jobd.web'); "
             "print((w / 'static' / 'index.html').is_file(), (w / 'openapi.json').is_file())")
    assert run([str(bin_ / "python"), "-c", probe], base, env).split() == ["True", "True"]
    res = subprocess.run([str(bin_ / "jobd"), "web"], cwd=base, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1
    assert "pip install 'jobd-queue[web]'" in res.stderr
