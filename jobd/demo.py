"""`jobd demo`: start jobd on its defaults with the example handlers, run a few
jobs through it with the client, show what happened, and stop.

The daemon runs as a child process exactly as `jobd serve` would; the demo
is an ordinary client of it. It always runs on its own temporary socket and
data dir, removed afterwards: another jobd on the default socket is left
alone, and demo jobs never show up in the user's own queue.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from jobd import constants as C
from jobd.config import Config
from jobd_client import Client, JobdError, WaitTimeout

DEMO_JOBS: list[tuple[str, list[Any], dict[str, Any]]] = [
    ("jobd.examples.add", [2, 3], {}),
    ("jobd.examples.count_words", ["the quick brown fox jumps over the lazy dog the end"], {}),
    ("jobd.examples.fetch_later", ["async handlers work"], {"delay": 0.2}),
    ("jobd.examples.echo", ["hello", "jobd"], {"from": "demo"}),
]


def _daemon_argv(cfg: Config, sock: str, data_dir: str) -> list[str]:
    argv = [sys.executable, "-m", "jobd", "serve", "--handlers", "jobd.examples",
            "--socket", sock, "--data-dir", data_dir,
            "--workers", str(max(1, cfg.workers.count)), "--fsync", cfg.wal.fsync,
            "--log-level", cfg.log_level]
    if cfg.config_path:
        argv += ["--config", cfg.config_path]
    return argv


def _wait_ready(proc: subprocess.Popen[bytes], client: Client, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            client.hello()
            return True
        except JobdError:
            time.sleep(0.05)
    return False


def _run_jobs(client: Client) -> bool:
    ids = [client.submit(h, args=a, kwargs=k) for h, a, k in DEMO_JOBS]
    print(f"submitted {len(ids)} jobs")
    ok = True
    try:
        jobs = client.wait_many(ids, timeout=60)
    except WaitTimeout as e:
        print(f"the demo jobs did not finish within 60 s: {e}", file=sys.stderr)
        return False
    for job in jobs:
        ok = ok and job.status == C.COMPLETED
        print(f"  {job.id}  {job.handler:<28} {job.status:<10} result={job.result!r}")
    workers = client.workers()
    print(f"{len(workers)} worker(s): " + ", ".join(f"#{w['id']} pid {w['pid']}" for w in workers))
    return ok


def run_demo(cfg: Config, keep_running: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="jobd-demo-") as root:
        sock, data_dir = os.path.join(root, "jobd.sock"), os.path.join(root, "data")
        return _demo(cfg, sock, data_dir, keep_running)


def _demo(cfg: Config, sock: str, data_dir: str, keep_running: bool) -> int:
    print(f"starting jobd for the demo: socket {sock}, data dir {data_dir} (both temporary)")
    proc = subprocess.Popen(_daemon_argv(cfg, sock, data_dir), stdin=subprocess.DEVNULL)
    client = Client(socket_path=sock)
    try:
        if not _wait_ready(proc, client):
            print("jobd did not start (see the log lines above)", file=sys.stderr)
            return C.EXIT_FAILURE
        ok = _run_jobs(client)
        if keep_running:
            print(f"jobd keeps running; try `JOBD_SOCKET={sock} jobd-cli list` in another "
                  "terminal. Ctrl-C stops it (and removes its data).")
            proc.wait()
        return C.EXIT_OK if ok else C.EXIT_FAILURE
    except KeyboardInterrupt:
        return C.EXIT_OK
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        print(f"jobd stopped (exit status {proc.returncode})")
