"""New handler code without downtime (`reload` op, SIGHUP), through the real daemon.

The handler modules live in a temp project directory the test edits; the
daemon runs there (the app dir) with no PYTHONPATH pointing at it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import wait_until

from jobd_client import Client, JobdError

V1 = '''import time

from jobd import handler

VERSION = "{version}"

@handler
def work(path, i):
    time.sleep(0.005)          # a stream of jobs still running while the code changes
    with open(path, "a") as f:
        f.write(f"{{VERSION}} {{i}}\\n")
    return VERSION
'''
EXTRA = '''

@handler
def extra(x):
    return x * 2
'''


class Project:
    """A project directory with `app/tasks.py`, and jobd serving it."""

    def __init__(self, tmp_path: Path, workers: int = 2) -> None:
        self.root = tmp_path / "proj"
        (self.root / "app").mkdir(parents=True)
        (self.root / "app" / "__init__.py").write_text("")
        self.write("v1")
        self.sock = str(tmp_path / "j.sock")
        self.log = tmp_path / "jobd.log"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JOBD_SOCKET")}
        env["PYTHONPATH"] = str(Path(__file__).parent.parent)       # jobd itself, not the app
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobd", "serve", "--handlers", "app.tasks", "--socket",
                 self.sock, "--data-dir", str(tmp_path / "data"), "--workers", str(workers),
                 "--log-level", "debug"], cwd=self.root, env=env, stdout=out, stderr=out)
        self.client = Client(socket_path=self.sock, timeout=60)
        wait_until(lambda: os.path.exists(self.sock) and self.client.hello(), 20,
                   what="jobd to serve")

    def write(self, version: str, extra: bool = False, broken: bool = False) -> None:
        source = V1.format(version=version) + (EXTRA if extra else "")
        if broken:
            source += "\ndef oops(:\n    pass\n"
        path = self.root / "app" / "tasks.py"
        path.write_text(source)
        pyc = list((self.root / "app" / "__pycache__").glob("tasks*.pyc")) \
            if (self.root / "app" / "__pycache__").exists() else []
        for p in pyc:
            p.unlink()          # same-second edits must not be served from a stale .pyc

    def stop(self) -> str:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        return self.log.read_text(errors="replace")


@pytest.fixture
def project(tmp_path):
    p = Project(tmp_path)
    yield p
    p.stop()


def test_a_reload_brings_new_handlers_and_a_failed_one_keeps_the_old_code(project, tmp_path):
    c = project.client
    with pytest.raises(JobdError) as e:
        c.submit("app.tasks.extra", args=[2])
    assert e.value.code == "unknown_handler"
    project.write("v1", broken=True)
    bad = c.reload()
    assert bad["reloaded"] is False and "tasks.py, line" in bad["error"], bad
    out = tmp_path / "out"
    assert c.wait(c.submit("app.tasks.work", args=[str(out), 0]), timeout=20).result == "v1"
    project.write("v2", extra=True)
    good = c.reload()
    assert good == {"reloaded": True, "handlers_added": ["app.tasks.extra"],
                    "handlers_removed": [], "error": None}, good
    assert c.wait(c.submit("app.tasks.extra", args=[21]), timeout=20).result == 42
    assert c.wait(c.submit("app.tasks.work", args=[str(out), 1]), timeout=20).result == "v2"


def test_jobs_of_a_removed_handler_are_held_and_run_when_it_comes_back(project):
    c = project.client
    project.write("v1", extra=True)
    assert c.reload()["handlers_added"] == ["app.tasks.extra"]
    c.scale(0)
    wait_until(lambda: not c.workers(), 20, what="workers to stop")
    job = c.submit("app.tasks.extra", args=[5])
    project.write("v1")
    assert c.reload()["handlers_removed"] == ["app.tasks.extra"]
    c.scale(2)
    wait_until(lambda: len(c.workers()) == 2, 20, what="new workers")
    marker = c.wait(c.submit("app.tasks.work", args=["/dev/null", 0]), timeout=20)
    assert marker.status == "completed"                       # the workers are running jobs
    assert c.status(job).status == "pending"                  # held: not run, not failed
    project.write("v1", extra=True)
    assert c.reload()["handlers_added"] == ["app.tasks.extra"]
    assert c.wait(job, timeout=20).result == 10


def test_reloads_under_load_lose_nothing_and_run_nothing_twice(project, tmp_path):
    c = project.client
    out = tmp_path / "out"

    def batch(first: int, n: int) -> list[str]:
        return c.submit_many([{"handler": "app.tasks.work", "args": [str(out), i]}
                              for i in range(first, first + n)])
    ids = batch(0, 300)
    wait_until(lambda: c.metrics()["queue"]["completed"] >= 20, 30, what="a first part to run")
    project.write("v2", broken=True)
    assert c.reload()["reloaded"] is False                   # the old code keeps serving
    ids += batch(300, 100)
    project.write("v2")
    assert c.reload()["reloaded"] is True
    after = batch(400, 100)                                  # submitted after the good reload
    jobs = c.wait_many(ids + after, timeout=120)
    assert all(j.status == "completed" and j.attempts == 1 for j in jobs), \
        [j for j in jobs if j.status != "completed" or j.attempts != 1][:3]
    lines = out.read_text().split("\n")[:-1]
    runs = Counter(int(line.split()[1]) for line in lines)
    assert runs == Counter(range(500)), "every job ran exactly once"
    version = {int(line.split()[1]): line.split()[0] for line in lines}
    assert all(version[i] == "v2" for i in range(400, 500))   # new code once reloaded
    assert version[0] == "v1"                                 # old code until then
    assert [j.result for j in jobs] == [version[i] for i in range(500)]


def test_sighup_reloads_the_code_too(project):
    c = project.client
    project.write("v3", extra=True)
    project.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "code reloaded" in project.log.read_text(), 30, what="the code reload")
    assert "app.tasks.extra" in c.hello()["handlers"]
