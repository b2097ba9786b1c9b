"""Serving: bind the listening socket, run uvicorn on it, stop in time.

The socket is bound here rather than by uvicorn so that a busy port or a
stale Unix socket is one clear line, and a Unix socket gets mode 0660 (not
uvicorn's 0666). SIGTERM/SIGINT end every event stream at once, then uvicorn
lets the other requests finish for at most GRACEFUL_S seconds.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Generator

import uvicorn

from jobd.web.settings import WebSettings

GRACEFUL_S = 1                   # a stop never waits longer than this (s) for open requests
UDS_MODE = 0o660
# Each connection's kernel send buffer, fixed (accepted sockets inherit it):
# autotuned, it could grow to megabytes for a client that stopped reading,
# hiding it from the event hub, which drops a stream that falls behind.
SEND_BUFFER = 256 * 1024
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class WebServer(uvicorn.Server):
    """uvicorn's server with our own signal handling: a stop first ends the
    event streams (`on_stop`), and the process exits 0, not by the signal."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop, sig)
        try:
            yield
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    def stop(self, sig: int) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True       # a second Ctrl-C: do not wait at all
        self.should_exit = True
        self.on_stop()


def bind(settings: WebSettings) -> socket.socket:
    """The listening socket; OSError with a clear message when it cannot be had."""
    return bind_unix(settings.uds) if settings.uds else bind_tcp(settings.host, settings.port)


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False, backlog=1024)
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    return sock


def bind_unix(path: str) -> socket.socket:
    remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~UDS_MODE)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {path}: {e.strerror or e}") from None
    finally:
        os.umask(old)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    sock.listen(1024)
    return sock


def remove_stale(path: str) -> None:
    """Remove a socket file nobody listens on (left by a killed process)."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise OSError(f"cannot listen on {path}: a file that is not a socket is there")
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
        except OSError:
            return
    raise OSError(f"cannot listen on {path}: another process is serving it")


def announce(settings: WebSettings, sock: socket.socket) -> None:
    """The address to open (and, with a token, the one-time sign-in link)."""
    if settings.uds:
        print(f"jobd web: serving on unix:{settings.uds}", flush=True)
        return
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    print(f"jobd web: serving {url}", flush=True)
    if settings.token:
        print(f"jobd web: sign in once with {url}?token={settings.token}", flush=True)


def serve(settings: WebSettings) -> int:
    from jobd.web.app import build_app, build_services
    try:
        sock = bind(settings)
    except OSError as e:
        print(f"jobd web: {e}", file=sys.stderr)
        return 1
    svc = build_services(settings)
    # log_config=None: uvicorn's records go through jobd's one-line handler (jobd.main).
    config = uvicorn.Config(build_app(settings, svc), loop=loop_name(), lifespan="on",
                            log_config=None, log_level="warning", access_log=False,
                            server_header=False, proxy_headers=False,
                            timeout_graceful_shutdown=GRACEFUL_S)
    logging.getLogger("uvicorn.error").addFilter(quiet_dropped_streams)
    server = WebServer(config, svc.hub.end_streams)
    announce(settings, sock)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if settings.uds:
            with contextlib.suppress(OSError):
                os.unlink(settings.uds)
    return 0


def quiet_dropped_streams(record: logging.LogRecord) -> bool:
    """A stream the hub dropped ends without completing its response, on purpose
    (the hub logs it as a warning): not an error of the application."""
    return not str(record.msg).startswith("ASGI callable returned without completing response")


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401 - the daemon's own dependency, normally present
    except ImportError:
        return "asyncio"
    return "uvloop"
