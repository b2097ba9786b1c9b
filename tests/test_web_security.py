"""`jobd web`'s security model and configuration (docs/web.md, "Security"): real
processes, real HTTP."""
from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DaemonProc, T
from webproc import WebProc

from jobd.constants import EXIT_CONFIG

pytestmark = pytest.mark.timeout(60)
SUBMIT = {"handler": T + "add", "args": [1, 2]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    d = DaemonProc(tmp_path_factory.mktemp("websec"), workers=1).start()
    yield d
    d.cleanup()


@pytest.fixture
def make_web(daemon: DaemonProc, tmp_path: Path) -> Iterator[type[WebProc]]:
    made: list[WebProc] = []

    class Made(WebProc):
        def __init__(self, extra: list[str] | None = None, config: str | None = None,
                     uds: str | None = None, socket: str | None = daemon.socket) -> None:
            super().__init__(tmp_path, socket, extra=extra, config=config, uds=uds)
            made.append(self)
    yield Made
    for w in made:
        w.cleanup()


def token_file(tmp_path: Path, mode: int = 0o600) -> tuple[str, str]:
    token = secrets.token_urlsafe(24)
    path = tmp_path / f"token-{mode:o}"
    path.write_text(token + "\n")
    path.chmod(mode)
    return str(path), token


def web_host(http: httpx.Client) -> str:
    return str(http.base_url.netloc.decode())


def code(r: httpx.Response) -> str:
    value: str = r.json()["error"]["code"]
    return value


# --- every response ----------------------------------------------------------------------------

def test_security_headers_on_every_response(make_web: type[WebProc]) -> None:
    web = make_web().start()
    http = web.http()
    for r in (http.get("/"), http.get("/api/jobs"), http.get("/api/nothing"),
              http.get("/", headers={"Host": "evil.example"})):
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


# --- Host and cross-site checks ----------------------------------------------------------------

def test_wrong_host_is_refused(make_web: type[WebProc]) -> None:
    web = make_web().start()
    http = web.http()
    r = http.get("/api/jobs", headers={"Host": "attacker.example:8790"})
    assert r.status_code in (400, 421) and code(r) == "bad_host"
    for host in ("localhost", "127.0.0.1:1234", "[::1]:8790"):
        assert http.get("/api/jobs", headers={"Host": host}).status_code == 200


def test_allowed_hosts_from_config_replace_the_defaults(make_web: type[WebProc]) -> None:
    web = make_web(extra=["--listen", "127.0.0.1:0"],
                   config='[web]\nallowed_hosts = ["jobs.internal"]\n').start()
    http = web.http()
    assert http.get("/api/jobs", headers={"Host": "jobs.internal"}).status_code == 200
    assert http.get("/api/jobs", headers={"Host": "localhost"}).status_code == 400


def test_cross_site_post_is_refused(make_web: type[WebProc]) -> None:
    http = make_web().start().http()
    for site in ("cross-site", "same-site", "none"):
        r = http.post("/api/jobs/submit", json=SUBMIT, headers={"Sec-Fetch-Site": site})
        assert r.status_code == 403 and code(r) == "forbidden"
    assert http.delete("/api/schedules/x", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    ok = http.post("/api/jobs/submit", json=SUBMIT, headers={"Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200
    assert http.post("/api/jobs/submit", json=SUBMIT).status_code == 200      # curl: no header
    assert http.get("/api/jobs", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
    # Browsers without Sec-Fetch-Site: their Origin must be this server.
    host = web_host(http)
    evil = http.post("/api/jobs/submit", json=SUBMIT, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and code(evil) == "forbidden"
    assert http.post("/api/jobs/submit", json=SUBMIT, headers={"Origin": "null"}).status_code == 403
    assert http.post("/api/jobs/submit", json=SUBMIT, headers={"Origin": f"http://{host}"}).status_code == 200


def test_read_only_refuses_every_unsafe_method(make_web: type[WebProc]) -> None:
    http = make_web(extra=["--read-only"]).start().http()
    for method, path in (("POST", "/api/jobs/submit"), ("POST", "/api/jobs/x/cancel"),
                         ("DELETE", "/api/schedules/x"), ("PUT", "/api/jobs"), ("PATCH", "/api/jobs")):
        r = http.request(method, path, json=SUBMIT)
        assert r.status_code == 405 and code(r) == "read_only", (method, path)
        assert r.headers["allow"] == "GET, HEAD"
    assert http.get("/api/jobs").status_code == 200


def test_body_size_limit(make_web: type[WebProc]) -> None:
    http = make_web().start().http()
    big = {"handler": T + "echo", "args": ["x" * (1024 * 1024 + 10)]}
    r = http.post("/api/jobs/submit", json=big)
    assert r.status_code == 413 and code(r) == "request_too_large"

    def chunks() -> Iterator[bytes]:            # no Content-Length: counted while read
        yield b'{"handler": "' + T.encode() + b'echo", "args": ["'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"]}'
    r = http.post("/api/jobs/submit", content=chunks())
    assert r.status_code == 413


# --- the token ---------------------------------------------------------------------------------

def test_token_required_bearer_and_one_time_link(make_web: type[WebProc], tmp_path: Path) -> None:
    path, token = token_file(tmp_path)
    web = make_web(extra=["--token-file", path]).start()
    assert f"/?token={token}" in web.log()
    http = web.http()
    for r in (http.get("/"), http.get("/static/index.html"), http.get("/api/jobs"),
              http.get("/api/jobs", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}),
              http.get("/?token=wrong")):
        assert r.status_code == 401 and code(r) == "unauthorized"
    bearer = {"Authorization": f"Bearer {token}"}
    assert http.get("/api/jobs", headers=bearer).status_code == 200
    assert http.post("/api/jobs/submit", json=SUBMIT, headers=bearer).status_code == 200
    # A valid bearer token passes the cross-site check (a script, not a browser's ambient cookie).
    assert http.post("/api/jobs/submit", json=SUBMIT,
                     headers={**bearer, "Sec-Fetch-Site": "cross-site"}).status_code == 200

    browser = web.http()
    r = browser.get(f"/?token={token}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert browser.get("/").status_code == 200                    # the cookie now works
    assert browser.get("/api/jobs").status_code == 200
    assert browser.post("/api/jobs/submit", json=SUBMIT,
                        headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert browser.post("/api/jobs/submit", json=SUBMIT,
                        headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_token_file_must_be_private(make_web: type[WebProc], tmp_path: Path) -> None:
    path, _ = token_file(tmp_path, 0o644)
    web = make_web(extra=["--token-file", path])
    assert web.run_to_exit() == EXIT_CONFIG
    assert path in web.log() and "0600" in web.log()


def test_non_loopback_listen_needs_a_token(make_web: type[WebProc], tmp_path: Path) -> None:
    web = make_web(extra=["--listen", "0.0.0.0:0"])
    assert web.run_to_exit() == EXIT_CONFIG
    assert "web.listen" in web.log() and "token" in web.log()
    path, token = token_file(tmp_path)
    served = make_web(extra=["--listen", "0.0.0.0:0", "--token-file", path]).start()
    port = served.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert http.get("/api/jobs").status_code == 401


@pytest.mark.parametrize(("config", "key"), [
    ('[web]\nlisten = "nonsense"\n', "web.listen"),
    ("[web]\nread_only = 3\n", "web.read_only"),
    ("[web]\nallowed_hosts = [1]\n", "web.allowed_hosts"),
    ('[web]\ncolour = "red"\n', "web.colour"),
    ('[web]\ntoken_file = "/nonexistent/token"\n', "web.token_file"),
])
def test_bad_web_config_exits_78_naming_the_key(make_web: type[WebProc], config: str, key: str) -> None:
    web = make_web(config=config)
    assert web.run_to_exit() == EXIT_CONFIG
    assert key in web.log()


def test_flags_override_the_config(make_web: type[WebProc]) -> None:
    web = make_web(extra=["--listen", "127.0.0.1:0"],
                   config='[web]\nlisten = "127.0.0.1:1"\nread_only = true\n').start()
    assert web.http().post("/api/jobs/submit", json=SUBMIT).status_code == 405


# --- Unix socket -------------------------------------------------------------------------------

def test_serves_on_a_unix_socket(make_web: type[WebProc], tmp_path: Path) -> None:
    path = str(tmp_path / "web.sock")
    web = make_web(uds=path).start()
    assert os.stat(path).st_mode & 0o777 == 0o660
    http = web.http()
    assert http.get("/api/jobs").status_code == 200
    job = http.post("/api/jobs/submit", json=SUBMIT).json()["job_id"]
    assert http.get(f"/api/jobs/{job}/result", params={"wait": 10}).json()["result"] == 3
    assert web.stop() == 0
    assert not os.path.exists(path)


def test_a_busy_port_is_one_clear_line(make_web: type[WebProc]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        web = make_web(extra=["--listen", f"127.0.0.1:{port}"])
        assert web.run_to_exit() == 1
    assert f"cannot listen on 127.0.0.1:{port}" in web.log()
