"""`jobd web`'s REST API against a real daemon and a real web process (docs/web.md).

One daemon and one web process for the module, on TCP then on a Unix socket
(every test runs on both): each test uses job ids, handlers or queues of its own.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import DaemonProc, T, wait_until
from webproc import WebProc

from jobd.web.app import ROUTES

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[queues."slow"]
workers = 1
"""


@pytest.fixture(scope="module", params=["tcp", "uds"])
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProc, WebProc]]:
    """Every test runs against `jobd web` on 127.0.0.1 and again on `--uds`."""
    root = tmp_path_factory.mktemp("web")
    daemon = DaemonProc(root, workers=2, config=CONFIG).start()
    uds = str(root / "web.sock") if request.param == "uds" else None
    web = WebProc(root, daemon.socket, uds=uds).start()
    yield daemon, web
    web.cleanup()
    daemon.cleanup()


@pytest.fixture
def http(stack: tuple[DaemonProc, WebProc]) -> Iterator[httpx.Client]:
    with stack[1].http() as client:
        yield client


def uid(prefix: str = "j") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def submit(http: httpx.Client, handler: str, **fields: Any) -> str:
    r = http.post("/api/jobs/submit", json={"handler": T + handler, **fields})
    assert r.status_code == 200, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def wait_status(http: httpx.Client, job_id: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        view: dict[str, Any] = http.get(f"/api/jobs/{job_id}/status").json()
        return view if view.get("status") == status else None
    found: dict[str, Any] = wait_until(reached, 20, what=f"{job_id} {status}")
    return found


def error_of(r: httpx.Response) -> str:
    code: str = r.json()["error"]["code"]
    assert r.json()["error"]["message"]
    return code


# --- jobs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("job_id", ["plain", "a/b", "with:colon", "x+y", "deep/a:b+c/status"])
def test_job_ids_with_slash_colon_plus(http: httpx.Client, job_id: str) -> None:
    job_id = f"{job_id}-{uuid.uuid4().hex[:6]}"
    r = http.post("/api/jobs/submit", json={"handler": T + "add", "args": [2, 3], "job_id": job_id})
    assert r.json() == {"job_id": job_id, "status": "pending"}
    res = http.get(f"/api/jobs/{job_id}/result", params={"wait": 10}).json()
    assert res["job_id"] == job_id and res["status"] == "completed" and res["result"] == 5
    assert set(res) >= {"job_id", "status", "result", "error", "duration", "completed_at"}
    view = http.get(f"/api/jobs/{job_id}/status").json()
    assert view["id"] == job_id and view["result"] == 5


def test_idempotency_key_makes_one_job(http: httpx.Client) -> None:
    key = uid("idem")
    body = {"handler": T + "add", "args": [1, 1]}
    first = http.post("/api/jobs/submit", json=body, headers={"Idempotency-Key": key}).json()
    second = http.post("/api/jobs/submit", json=body, headers={"Idempotency-Key": key}).json()
    assert first["job_id"] == second["job_id"] == key
    page = http.get("/api/jobs", params={"q": key}).json()
    assert page["total"] == 1 and page["jobs"][0]["id"] == key


def test_result_long_polls_until_the_job_ends(http: httpx.Client, stack: tuple[DaemonProc, WebProc],
                                              tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job_id = submit(http, "wait_file", args=[str(gate)])
    early = http.get(f"/api/jobs/{job_id}/result", params={"wait": 0}).json()
    assert early["status"] in ("pending", "running") and early["result"] is None
    with stack[1].http(timeout=30) as other:
        gate.write_text("go")
        res = other.get(f"/api/jobs/{job_id}/result", params={"wait": 20}).json()
    assert res["status"] == "completed"


def test_status_shows_progress_percentage(http: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "steps").write_text("go")
    job_id = submit(http, "progress_steps", args=[str(tmp_path / "steps"), 4])
    view = http.get(f"/api/jobs/{job_id}/result", params={"wait": 20}).json()
    assert view["status"] == "completed"
    status = http.get(f"/api/jobs/{job_id}/status").json()
    assert status["progress"]["percentage"] == 100


def test_list_filters_and_pages(http: httpx.Client) -> None:
    tag = uid("batch")
    ids = [submit(http, "add", args=[i, 1], tags={"batch": tag}) for i in range(7)]
    for job_id in ids:
        http.get(f"/api/jobs/{job_id}/result", params={"wait": 20})
    first = http.get("/api/jobs", params={"tag": f"batch={tag}", "limit": 3}).json()
    assert first["total"] == 7 and first["page"] == 1
    assert [j["id"] for j in first["jobs"]] == ids[:3]
    third = http.get("/api/jobs", params={"tag": f"batch={tag}", "limit": 3, "page": 3}).json()
    assert [j["id"] for j in third["jobs"]] == ids[6:]
    both = http.get("/api/jobs", params={"tag": f"batch={tag}", "status": "completed",
                                         "handler": T + "add", "queue": "default"}).json()
    assert both["total"] == 7
    assert http.get("/api/jobs", params={"q": f"batch={tag}"}).json()["total"] == 7
    assert http.get("/api/jobs", params={"tag": f"batch={tag}", "status": "failed"}).json()["total"] == 0


def test_list_parameters_are_checked(http: httpx.Client) -> None:
    assert error_of(http.get("/api/jobs", params={"limit": 0})) == "invalid_argument"
    assert http.get("/api/jobs", params={"limit": "x"}).status_code == 422
    assert http.get("/api/jobs", params={"page": 0}).status_code == 422
    assert http.get("/api/jobs", params={"limit": 501}).status_code == 422


def test_cancel_retry_replay(http: httpx.Client, tmp_path: Path) -> None:
    job_id = submit(http, "add", args=[1, 2], delay=3600)
    r = http.post(f"/api/jobs/{job_id}/cancel")
    assert r.json()["cancelled"] is True
    r = http.post(f"/api/jobs/{job_id}/retry")
    assert r.json() == {"job_id": job_id, "status": "pending"}
    assert http.get(f"/api/jobs/{job_id}/result", params={"wait": 20}).json()["result"] == 3
    r = http.post(f"/api/jobs/{job_id}/replay", json={"args": [10, 20]})
    new = r.json()["job_id"]
    assert new != job_id
    assert http.get(f"/api/jobs/{new}/result", params={"wait": 20}).json()["result"] == 30
    assert http.get(f"/api/jobs/{new}/status").json()["replay_of"] == job_id


def test_force_cancel_of_a_running_job(http: httpx.Client, tmp_path: Path) -> None:
    started = tmp_path / "started"
    job_id = submit(http, "wait_file", args=[str(tmp_path / "never"), str(started)])
    wait_until(started.exists, 20, what="job to start")
    assert http.post(f"/api/jobs/{job_id}/cancel").json()["cancelled"] is False
    assert http.post(f"/api/jobs/{job_id}/cancel", params={"force": 1}).json()["cancelled"] is True
    wait_status(http, job_id, "cancelled")


def test_bulk_ops_with_dry_run(http: httpx.Client) -> None:
    tag = uid("bulk")
    ids = [submit(http, "add", args=[1, i], delay=3600, tags={"b": tag}) for i in range(4)]
    dry = http.post("/api/jobs/cancel_many", json={"tag": f"b={tag}", "dry_run": True}).json()
    assert dry["matched"] == 4 and dry["cancelled"] == 0 and set(dry["sample"]) <= set(ids)
    done = http.post("/api/jobs/cancel_many", json={"tag": f"b={tag}"}).json()
    assert done["cancelled"] == 4
    dry = http.post("/api/jobs/retry_many", json={"tag": f"b={tag}", "dry_run": True}).json()
    assert dry["matched"] == 4 and dry["retried"] == 0
    assert http.post("/api/jobs/cancel_many", json={"tag": f"b={tag}", "status": "scheduled"}
                     ).json()["matched"] == 0
    purge_dry = http.post("/api/jobs/purge", json={"tag": f"b={tag}", "dry_run": True}).json()
    assert purge_dry["matched"] == 4
    assert http.post("/api/jobs/purge", json={"tag": f"b={tag}"}).json()["purged"] == 4
    assert http.get(f"/api/jobs/{ids[0]}/status").status_code == 404


def test_bulk_refuses_an_empty_filter_and_unknown_fields(http: httpx.Client) -> None:
    assert error_of(http.post("/api/jobs/cancel_many", json={})) == "invalid_argument"
    assert error_of(http.post("/api/jobs/retry_many", json={"colour": "red"})) == "invalid_argument"


def test_dead_letters_and_retry(http: httpx.Client) -> None:
    handler = T + "always_fail"
    job_id = submit(http, "always_fail", max_retries=0, tags={"dl": uid()})
    wait_status(http, job_id, "dead_letter")
    page = http.get("/api/dead_letters", params={"handler": handler, "limit": 500}).json()
    assert job_id in [j["id"] for j in page["jobs"]] and page["page"] == 1
    assert all(j["status"] == "dead_letter" for j in page["jobs"])
    assert http.post(f"/api/jobs/{job_id}/retry").json()["status"] == "pending"


def test_failures_answers_groups_or_a_clear_error(http: httpx.Client) -> None:
    r = http.get("/api/failures")
    if r.status_code == 200:          # a daemon with failure_groups
        assert isinstance(r.json()["groups"], list)
    else:                             # before it: the daemon's unknown_op, as 422
        assert r.status_code == 422 and error_of(r) == "unknown_op"


def test_failure_groups_and_the_list_filters(http: httpx.Client) -> None:
    if http.get("/api/failures").status_code != 200:
        pytest.skip("this daemon has no failure_groups op (nor the list filters that come with it)")
    # Letters only, and not hex: the normaliser keeps a plain word in the message.
    marker = "zz" + uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "ghijklmnop"))
    ids = [submit(http, "always_fail", args=[f"quota {marker} exceeded after {i} tries"], max_retries=0)
           for i in range(3)]
    for job_id in ids:
        wait_status(http, job_id, "dead_letter")
    groups = http.get("/api/failures", params={"handler": T + "always_fail"}).json()["groups"]
    (group,) = [g for g in groups if marker in g["message"]]
    assert group["count"] == 3 and set(group["sample_ids"]) <= set(ids)
    by_sig = http.get("/api/dead_letters", params={"signature": group["signature"]}).json()
    assert {j["id"] for j in by_sig["jobs"]} == set(ids)
    assert http.get("/api/jobs", params={"error_match": marker}).json()["total"] == 3
    assert http.get("/api/jobs", params={"q": marker}).json()["total"] == 3
    dry = http.post("/api/jobs/retry_many", json={"signature": group["signature"], "dry_run": True})
    assert dry.json()["matched"] == 3


# --- metrics, workers, queues, handlers -----------------------------------------------------

def test_metrics_shape(http: httpx.Client) -> None:
    m = http.get("/api/jobs/metrics").json()
    assert {"pending", "size"} <= m["queue"].keys() and m["queue"]["size"] == 1_000_000
    assert {"total", "idle", "busy"} <= m["workers"].keys()
    assert {"1m", "5m", "15m"} <= m["throughput"].keys()
    assert {"fsyncs", "bytes"} <= m["wal"].keys()


def test_workers_scale_and_restart(http: httpx.Client) -> None:
    workers = http.get("/api/workers").json()["workers"]
    assert workers and {"id", "pid", "status"} <= workers[0].keys()
    r = http.post("/api/workers/scale", json={"count": 1, "queue": "slow"}).json()
    assert r == {"previous": 1, "target": 1, "queue": "slow", "status": "scaling"}
    wid = workers[0]["id"]
    assert http.post(f"/api/workers/{wid}/restart").json()["restarted"] is True
    assert error_of(http.post("/api/workers/9999/restart")) == "not_found"
    assert http.post("/api/workers/scale", json={"count": "two"}).status_code == 422


def test_queue_pause_and_resume(http: httpx.Client) -> None:
    r = http.post("/api/queues/slow/pause", json={"for": 60, "reason": "maintenance"})
    assert r.status_code == 200 and r.json()["paused"]["reason"] == "maintenance"
    queues = {q["name"]: q for q in http.get("/api/queues").json()["queues"]}
    assert queues["slow"]["paused"]
    assert http.post("/api/queues/slow/resume").json() == {"resumed": True}
    assert http.post("/api/queues/slow/resume").json() == {"resumed": False}
    assert error_of(http.post("/api/queues/nosuch/pause")) == "not_found"
    assert http.post("/api/queues/slow/pause", json={"until": 3}).status_code == 422


def test_handler_pause_resume_release_reset(http: httpx.Client) -> None:
    name = T + "echo"
    assert http.post(f"/api/handlers/{name}/pause", json={"reason": "x"}).json()["paused"]["handler"] == name
    states = {h["name"]: h for h in http.get("/api/handlers").json()["handlers"]}
    assert states[name]["state"] == "paused"
    assert http.post(f"/api/handlers/{name}/resume").json() == {"resumed": True}
    assert http.post(f"/api/handlers/{name}/release").json() == {"released": False}
    assert http.post(f"/api/handlers/{name}/reset").json() == {"reset": False}
    assert error_of(http.post("/api/handlers/nosuch.handler/pause")) == "not_found"


def test_alerts(http: httpx.Client) -> None:
    assert isinstance(http.get("/api/alerts").json()["alerts"], list)


def test_schedules_add_list_remove(http: httpx.Client) -> None:
    name = uid("sched")
    r = http.post("/api/schedules", json={"name": name, "cron": "*/30 * * * *", "handler": T + "noop"})
    assert r.status_code == 200 and r.json()["schedule"]["name"] == name
    listed = {s["name"]: s for s in http.get("/api/schedules").json()["schedules"]}
    runs = listed[name]["next_runs"]
    assert len(runs) == 48 and runs == sorted(runs)
    assert http.delete(f"/api/schedules/{name}").json()["removed"] is True
    assert error_of(http.delete(f"/api/schedules/{name}")) == "not_found"
    bad = http.post("/api/schedules", json={"name": name, "cron": "nope", "handler": T + "noop"})
    assert error_of(bad) == "invalid_argument"


def test_schedules_show_their_recent_runs_by_outcome(http: httpx.Client) -> None:
    """`last_runs`: the jobs its last fire times gave (found by their job ids)."""
    name = uid("every-second")
    r = http.post("/api/schedules", json={"name": name, "cron": "* * * * * *", "handler": T + "noop"})
    assert r.status_code == 200, r.text

    def two_completed() -> dict[str, Any] | None:
        s = {s["name"]: s for s in http.get("/api/schedules").json()["schedules"]}[name]
        return s if s["outcomes"].get("completed", 0) >= 2 else None
    try:
        s = wait_until(two_completed, 20, interval=0.2, what="two completed runs")
    finally:
        http.delete(f"/api/schedules/{name}")
    runs = s["last_runs"]
    assert sum(s["outcomes"].values()) == len(runs) and runs == sorted(runs, key=lambda r: r["job_id"])
    for run in runs:
        view = http.get(f"/api/jobs/{run['job_id']}/status").json()
        assert view["status"] == run["status"] or run["status"] != "completed"
        assert view["name"] == name or name in view["id"]


def test_lanes_and_history(http: httpx.Client) -> None:
    http.get("/api/workers/lanes")                 # opens the shared event stream
    wait_until(lambda: http.get("/api/workers/lanes").json()["live"], 10, what="upstream")
    job_id = submit(http, "add", args=[4, 4])
    http.get(f"/api/jobs/{job_id}/result", params={"wait": 20})

    def seen() -> bool:
        lanes = http.get("/api/workers/lanes").json()["lanes"]
        return any(e["job_id"] == job_id and e["status"] == "completed"
                   for lane in lanes.values() for e in lane)
    wait_until(seen, 10, what="the job in a lane")
    hist = http.get("/api/overview/history").json()
    assert hist["interval_s"] == 5 and hist["samples"]
    assert {"t", "counts", "workers", "throughput", "failure_rate", "wal"} <= hist["samples"][-1].keys()


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("GET", "/api/jobs/nosuch-job/status", None, 404, "not_found"),
    ("GET", "/api/jobs/nosuch-job/result", None, 404, "not_found"),
    ("POST", "/api/jobs/nosuch-job/cancel", None, 404, "not_found"),
    ("POST", "/api/jobs/submit", {"handler": "no.such.handler"}, 422, "unknown_handler"),
    ("POST", "/api/jobs/submit", {"handler": T + "add", "priority": "urgent"}, 422, "invalid_argument"),
    ("POST", "/api/jobs/submit", {"handler": T + "add", "op": "purge"}, 422, "invalid_argument"),
    ("POST", "/api/jobs/submit", {"handler": T + "add", "self": 1}, 422, "invalid_argument"),
    ("POST", "/api/schedules", {"name": "x", "cron": "* * * * *", "handler": T + "add", "id": 3},
     422, "invalid_argument"),
    ("POST", "/api/jobs/submit", "not json", 422, "bad_request"),
    ("POST", "/api/jobs/submit", [1, 2], 422, "bad_request"),
    ("GET", "/api/nothing/here", None, 404, "not_found"),
    ("DELETE", "/api/jobs", None, 405, "method_not_allowed"),
])
def test_error_mapping(http: httpx.Client, method: str, path: str, body: Any, status: int,
                       code: str) -> None:
    content = body if isinstance(body, str) else None if body is None else json.dumps(body)
    r = http.request(method, path, content=content)
    assert r.status_code == status, r.text
    assert error_of(r) == code
    assert r.headers["content-type"].startswith("application/json")


def test_conflict_is_409(http: httpx.Client) -> None:
    job_id = submit(http, "add", args=[1, 1])
    http.get(f"/api/jobs/{job_id}/result", params={"wait": 20})
    assert error_of(http.post(f"/api/jobs/{job_id}/retry")) == "conflict"
    pending = submit(http, "add", args=[1, 1], delay=3600)
    r = http.post(f"/api/jobs/{pending}/replay")
    assert r.status_code == 409 and error_of(r) == "conflict"


def test_queue_full_is_429_with_retry_after(tmp_path: Path) -> None:
    daemon = DaemonProc(tmp_path, workers=0, config="[queue]\nmax_size = 1\n").start()
    assert daemon.config_path is not None
    web = WebProc(tmp_path, daemon.socket, extra=["--config", daemon.config_path]).start()
    try:
        with web.http() as http:
            submit(http, "add", args=[1, 1])
            r = http.post("/api/jobs/submit", json={"handler": T + "add", "args": [1, 2]})
            assert r.status_code == 429 and error_of(r) == "queue_full"
            assert int(r.headers["retry-after"]) >= 1
            assert http.get("/api/jobs/metrics").json()["queue"]["size"] == 1
    finally:
        web.cleanup()
        daemon.cleanup()


# --- pages and the API description ------------------------------------------------------------------

def test_pages_and_static_files(http: httpx.Client) -> None:
    r = http.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert http.get("/static/index.html").status_code == 200
    assert error_of(http.get("/static/nothing.js")) == "not_found"
    assert http.get("/static/../settings.py").status_code == 404


def test_openapi_matches_the_routes_both_ways(http: httpx.Client) -> None:
    doc = http.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    served = {(m, p.replace(":path", "")) for m, p, _ in ROUTES}
    served |= {("GET", "/api/openapi.json")}
    assert documented - served == set(), "documented but not served"
    assert served - documented == set(), "served but not documented"
    for method, path in sorted(served):            # every GET route answers, none is a routing 404
        if method != "GET" or path == "/api/events":
            continue
        r = http.get(path.replace("{id}", "x"), params={"wait": 0}, timeout=10)
        assert r.status_code in (200, 404, 422), (path, r.text)
        if r.status_code == 404:
            assert r.json()["error"]["message"] != "Not Found", path
