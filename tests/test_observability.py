"""Progress, live events, metrics (JSON, Prometheus, HTTP) through the real daemon."""
from __future__ import annotations

import os
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import T, wait_until
from prometheus_client.parser import text_string_to_metric_families

FAMILIES = {
    "jobd_jobs_submitted_total": "counter", "jobd_jobs_completed_total": "counter",
    "jobd_jobs_retried_total": "counter", "jobd_jobs_dead_letter_total": "counter",
    "jobd_jobs_pending": "gauge", "jobd_jobs_running": "gauge",
    "jobd_dead_letter_jobs": "gauge", "jobd_workers_total": "gauge",
    "jobd_workers_idle": "gauge", "jobd_workers_busy": "gauge",
    "jobd_job_duration_seconds": "histogram", "jobd_job_queue_time_seconds": "histogram",
    "jobd_job_retry_delay_seconds": "histogram", "jobd_job_result_size_bytes": "summary",
}


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(fams: dict, family: str, suffix: str = "", **labels: str) -> float | None:
    fam = fams.get(family)
    if fam is None:
        return None
    for s in fam.samples:
        if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


class EventLog:
    """Collects a watch stream on a thread so tests can wait on what arrived."""

    def __init__(self, client, **kw) -> None:
        self.events: list = []
        self.stream = client.watch(**kw)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for ev in self.stream:
                self.events.append(ev)
        except Exception:  # noqa: BLE001 - the stream ends when closed
            pass

    def names(self, job_id: str | None = None) -> list[str]:
        return [e.event for e in self.events if job_id is None or e.data.get("job_id") == job_id]

    def close(self) -> None:
        self.stream.close()


def test_progress_and_events_end_to_end(daemon, client, tmp_path: Path):
    log = EventLog(daemon.client())
    gate = tmp_path / "go"
    job_id = client.submit(T + "progress_steps", args=[str(gate), 4])
    wait_until(lambda: (client.progress(job_id) or {}).get("current") == 1, what="first progress")
    prog = client.status(job_id).progress
    assert prog["total"] == 4 and prog["percentage"] == 25.0 and prog["message"] == "started"
    assert prog["updated_at"].endswith("Z")
    gate.touch()
    job = client.wait(job_id, timeout=15)
    assert job.status == "completed"
    assert job.progress["current"] == 4 and job.progress["percentage"] == 100.0
    wait_until(lambda: "job.completed" in log.names(job_id), what="job.completed event")
    names = log.names(job_id)
    assert names[0] == "job.submitted" and names[1] == "job.started"
    assert names[-1] == "job.completed"
    assert set(names[2:-1]) == {"job.progress"}
    progress = [e.data for e in log.events if e.event == "job.progress"]
    assert progress[-1]["current"] == 4 and progress[-1]["total"] == 4
    assert progress[-1]["percentage"] == 100.0 and isinstance(progress[-1]["message"], str)
    assert all(p["job_id"] == job_id and p["timestamp"].endswith("Z") for p in progress)
    submitted = next(e for e in log.events if e.event == "job.submitted")
    assert submitted.data["handler"] == T + "progress_steps" and submitted.data["priority"] == 10
    assert submitted.data["timestamp"].endswith("Z")
    started = next(e for e in log.events if e.event == "job.started")
    assert started.data["attempt"] == 1 and isinstance(started.data["worker_id"], int)
    done = next(e for e in log.events if e.event == "job.completed")
    assert done.data["duration"] >= 0
    log.close()


def test_watch_filters_by_job_and_event(daemon, client):
    other = client.submit(T + "add", args=[1, 1])
    client.wait(other, timeout=10)
    target = client.submit(T + "sleep", args=[0.2], job_id="watched-job")
    only_job = EventLog(daemon.client(), job_id=target)
    only_done = EventLog(daemon.client(), events=["job.completed"])
    client.wait(target, timeout=10)
    late = client.submit(T + "add", args=[2, 2])
    client.wait(late, timeout=10)
    wait_until(lambda: len(only_done.events) >= 2, what="two completions")
    wait_until(lambda: "job.completed" in only_job.names(), what="watched completion")
    assert {e.data["job_id"] for e in only_job.events} == {target}
    assert set(only_done.names()) == {"job.completed"}
    assert {e.data["job_id"] for e in only_done.events} >= {target, late}
    only_job.close()
    only_done.close()


def test_watch_unknown_job_is_not_found(client):
    from jobd_client import NotFound
    with pytest.raises(NotFound):
        client.watch(job_id="no-such-job")


def test_failure_and_dead_letter_events(make_daemon):
    d = make_daemon(config="[retry]\nretry_delay = 0.05\njitter = false\n")
    c = d.client()
    log = EventLog(d.client())
    job_id = c.submit(T + "always_fail", args=["nope"], max_retries=1)
    wait_until(lambda: "job.dead_letter" in log.names(job_id), what="dead letter event")
    failed = [e for e in log.events if e.event == "job.failed" and e.data["job_id"] == job_id]
    assert [e.data["will_retry"] for e in failed] == [True, False]
    assert [e.data["attempts"] for e in failed] == [1, 2]
    assert "nope" in failed[-1].data["error"]
    dead = next(e for e in log.events if e.event == "job.dead_letter")
    assert dead.data["total_attempts"] == 2 and dead.data["handler"] == T + "always_fail"
    assert "nope" in dead.data["final_error"] and dead.data["job_id"] == job_id
    log.close()


def test_worker_events(daemon, client):
    wait_until(lambda: all(w["healthy"] for w in client.workers()), what="workers ready")
    log = EventLog(daemon.client(), events=["worker.started", "worker.exited"])
    before = {w["id"] for w in client.workers()}
    wid = sorted(before)[0]
    assert client.restart_worker(wid) is True
    wait_until(lambda: "worker.exited" in log.names() and "worker.started" in log.names(),
               what="worker events")
    exited = next(e for e in log.events if e.event == "worker.exited")
    assert exited.data["worker_id"] == wid and exited.data["job_id"] is None
    assert exited.data["exit_code"] == 0 and exited.data["signal"] is None
    started = next(e for e in log.events if e.event == "worker.started")
    assert started.data["worker_id"] not in before and started.data["pid"] > 0
    log.close()


def test_stuck_watcher_does_not_stop_jobs_and_is_dropped(make_daemon):
    d = make_daemon(workers=2)
    c = d.client()
    # A watcher that never reads: its socket buffers fill, then the daemon's
    # bounded buffer fills, and the daemon drops it.
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(d.socket)
    raw.sendall(b'{"op":"watch","id":"w"}\n')
    rss_before = _rss(d.pid)
    # ~4 events of ~150 bytes per job: 12,000 jobs overflow the 4 MiB bound.
    for _ in range(12):
        ids = c.submit_many([{"handler": T + "noop"} for _ in range(1000)])
    wait_until(lambda: c.metrics()["queue"]["completed"] >= 12000, timeout=90,
               what="12000 jobs to complete with a stuck watcher")
    assert c.status(ids[-1]).status == "completed"
    growth = _rss(d.pid) - rss_before
    assert growth < 64 * 1024 * 1024, f"daemon grew by {growth} bytes"
    # The stuck watcher was disconnected with a final watch.lagged event.
    raw.settimeout(10)
    data = b""
    while True:
        chunk = raw.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    assert b'"event":"watch.lagged"' in data.splitlines()[-1]
    raw.close()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_progress_flood_is_coalesced(daemon, client):
    wal_dir = Path(daemon.data_dir) / "wal"
    size_before = sum(p.stat().st_size for p in wal_dir.glob("*.log"))
    job_id = client.submit(T + "progress_flood", args=[100_000])
    job = client.wait(job_id, timeout=60)
    assert job.status == "completed" and job.result == 100_000
    assert job.progress["current"] == 100_000 and job.progress["percentage"] == 100.0
    grown = sum(p.stat().st_size for p in wal_dir.glob("*.log")) - size_before
    # 100,000 progress records would be several MB; coalescing keeps it tiny.
    assert grown < 200_000, f"WAL grew by {grown} bytes for one job"


def test_progress_survives_restart(make_daemon, tmp_path: Path):
    d = make_daemon(workers=1)
    c = d.client()
    gate = tmp_path / "never"
    job_id = c.submit(T + "progress_steps", args=[str(gate), 10])
    wait_until(lambda: (c.progress(job_id) or {}).get("current") == 1, what="progress")
    c.close()
    d.kill9()
    d.workers = 0
    d.start()
    c = d.client()
    prog = c.progress(job_id)
    assert prog is not None and prog["current"] == 1 and prog["total"] == 10


def test_prometheus_text_has_every_family_and_moves(make_daemon):
    d = make_daemon(config="[retry]\nretry_delay = 0.05\njitter = false\n")
    c = d.client()
    before = _families(c.metrics(format="prometheus"))
    for name, kind in FAMILIES.items():
        assert name in before or name.removesuffix("_total") in before, name
        fam = before.get(name) or before.get(name.removesuffix("_total"))
        assert fam.type == kind, (name, fam.type)
    ids = [c.submit(T + "add", args=[i, i], priority="high") for i in range(5)]
    bad = c.submit(T + "always_fail", max_retries=1)
    for job_id in ids + [bad]:
        c.wait(job_id, timeout=15)
    after = _families(c.metrics(format="prometheus"))
    assert _sample(after, "jobd_jobs_submitted", "_total", handler=T + "add", priority="20") == 5
    assert _sample(after, "jobd_jobs_completed", "_total", handler=T + "add", status="completed") == 5
    assert _sample(after, "jobd_jobs_retried", "_total", handler=T + "always_fail") == 1
    assert _sample(after, "jobd_jobs_dead_letter", "_total", handler=T + "always_fail") == 1
    assert _sample(after, "jobd_dead_letter_jobs") == 1
    assert _sample(after, "jobd_job_duration_seconds", "_count", handler=T + "add") == 5
    assert _sample(after, "jobd_job_duration_seconds", "_bucket", handler=T + "add", le="+Inf") == 5
    assert _sample(after, "jobd_job_queue_time_seconds", "_count", priority="20") == 5
    assert _sample(after, "jobd_job_retry_delay_seconds", "_count", handler=T + "always_fail") == 1
    assert _sample(after, "jobd_job_result_size_bytes", "_count", handler=T + "add") == 5
    assert _sample(after, "jobd_workers_total") == 2


def test_metrics_json_shape(daemon, client):
    job_id = client.submit(T + "add", args=[1, 2])
    client.wait(job_id, timeout=10)
    m = client.metrics()
    assert set(m["queue"]) >= {"scheduled", "waiting", "pending", "running", "retrying",
                               "completed", "failed", "cancelled", "dead_letter", "by_priority"}
    assert m["queue"]["completed"] == 1
    assert set(m["workers"]) >= {"total", "idle", "busy", "healthy"}
    assert set(m["throughput"]) == {"1m", "5m", "15m"} and m["throughput"]["1m"] > 0
    assert m["wal"]["bytes"] > 0 and m["wal"]["fsyncs"] >= 1
    assert m["uptime_s"] >= 0


def test_metrics_by_priority_counts_pending(make_daemon):
    d = make_daemon(workers=0)
    c = d.client()
    c.submit(T + "add", args=[1, 1], priority="critical")
    c.submit(T + "add", args=[1, 1], priority=7)
    c.submit(T + "add", args=[1, 1], priority=7)
    assert c.metrics()["queue"]["by_priority"] == {"30": 1, "7": 2}
    fams = _families(c.metrics(format="prometheus"))
    assert _sample(fams, "jobd_jobs_pending", priority="7") == 2


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_metrics_over_http(make_daemon):
    port = _free_port()
    d = make_daemon(config=f'[monitoring]\nmetrics_listen = "127.0.0.1:{port}"\n')
    c = d.client()
    c.wait(c.submit(T + "add", args=[1, 1]), timeout=10)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        body = resp.read().decode()
    fams = _families(body)
    assert set(FAMILIES) <= {n if n in FAMILIES else n + "_total" for n in fams} | set(fams)
    assert _sample(fams, "jobd_jobs_completed", "_total", handler=T + "add", status="completed") == 1
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert err.value.code == 404
    err.value.close()


def test_slow_jobs_are_logged(make_daemon):
    d = make_daemon(config="[monitoring]\nslow_job_threshold = 0.05\n")
    c = d.client()
    job_id = c.submit(T + "sleep", args=[0.2])
    c.wait(job_id, timeout=10)
    wait_until(lambda: f"slow job {job_id}" in d.log(), what="slow job log line")


def test_log_lines_have_no_timestamps_under_journald(make_daemon):
    d = make_daemon(env={"JOURNAL_STREAM": "8:1234"})
    d.client().hello()
    first = next(line for line in d.log().splitlines() if "serving on" in line)
    assert first.startswith("INFO "), first
    d2 = make_daemon()
    first2 = next(line for line in d2.log().splitlines() if "serving on" in line)
    assert first2[:4].isdigit(), first2


def test_max_concurrency_limits_a_handler(make_daemon, tmp_path: Path):
    d = make_daemon(workers=3, config='[handler."jobd_testhandlers.block"]\nmax_concurrency = 1\n')
    c = d.client()
    marks = [tmp_path / f"m{i}" for i in range(2)]
    first = c.submit(T + "block", args=[str(marks[0])])
    second = c.submit(T + "block", args=[str(marks[1])])
    other = c.submit(T + "add", args=[1, 2])
    assert c.wait(other, timeout=10).status == "completed"
    wait_until(marks[0].exists, what="first blocking job to start")
    assert c.status(second).status == "pending"          # held back by the limit
    assert c.cancel(first, force=True) is True
    wait_until(marks[1].exists, what="second job to start after the first ended")
    assert c.status(second).status == "running"
    c.cancel(second, force=True)
    assert not os.path.exists(tmp_path / "m2")


def test_running_gauge_counts_the_jobs_running_now_per_handler(daemon, client, tmp_path):
    """`jobd_jobs_running` is read from flow control's own count per handler."""
    gate, started = tmp_path / "go", tmp_path / "started"
    job_id = client.submit(T + "wait_file", args=[str(gate), str(started)])
    wait_until(started.exists, what="the job to start")
    fams = _families(client.metrics(format="prometheus"))
    assert _sample(fams, "jobd_jobs_running", handler=T + "wait_file") == 1
    gate.touch()
    assert client.wait(job_id, timeout=15).status == "completed"
    fams = _families(client.metrics(format="prometheus"))
    assert not [s for s in fams["jobd_jobs_running"].samples if s.value]
