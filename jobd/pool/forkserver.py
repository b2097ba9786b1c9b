"""A small synchronous fork server, forked before the event loop starts.

libuv state does not survive `fork()` well, so the daemon never forks from its
running loop. Instead, at startup (handler modules already imported) it forks
this server; the server forks workers on request. Workers therefore start in
microseconds with the handler code already loaded, and runtime scaling is
safe.

Control channel (SOCK_SEQPACKET, one orjson object per message):
  daemon → server: {"spawn": worker_id}  + the worker's socket end (SCM_RIGHTS)
  server → daemon: {"spawned": worker_id, "pid": pid}
                   {"exited": worker_id, "pid": pid, "code": int|None, "signal": str|None}
When the control channel closes (the daemon exited or died), the server kills
its workers and exits. Workers die with it (PR_SET_PDEATHSIG).

Code reload (`reload`, SIGHUP) starts a second fork server the other way:
executed afresh (`python -m jobd.pool.forkserver`, a new interpreter, never a
fork of the running loop), it imports the handler modules anew and first
sends either {"registry": <the handlers, as JSON>} or {"error": <why the
import failed>}; then it serves like the first one. The daemon keeps the old
one until its last worker has exited.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger("jobd.forkserver")

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` when our parent exits (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def describe_status(status: int) -> tuple[int | None, str | None]:
    """waitpid status → (exit code, signal name)."""
    if os.WIFSIGNALED(status):
        return None, signal.Signals(os.WTERMSIG(status)).name
    return os.waitstatus_to_exitcode(status), None


class ForkServerClient:
    """The daemon's end: ask for workers, hear about exits."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid

    def spawn(self, worker_id: int, worker_sock: socket.socket) -> None:
        msg = orjson.dumps({"spawn": worker_id})
        socket.send_fds(self.sock, [msg], [worker_sock.fileno()])

    def read_messages(self) -> list[dict[str, Any]] | None:
        """Messages available now; None when the fork server is gone (and every
        message it sent before going has been returned)."""
        out: list[dict[str, Any]] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            except OSError:
                return out or None
            if not data:
                return out or None
            out.append(orjson.loads(data))

    def close(self) -> None:
        self.sock.close()


def start(worker_main: Callable[[socket.socket, int], None],
          not_inherited: tuple[socket.socket, ...] = ()) -> ForkServerClient:
    """Fork the server; returns the daemon's client. Call before the loop runs.
    `not_inherited`: sockets the fork server and its workers must not keep open
    (the listening socket: a copy would keep accepting into a backlog nobody
    reads once the daemon has stopped listening)."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        for sock in not_inherited:
            sock.close()
        code = 0
        try:
            _ForkServer(child_end, worker_main, parent_pid).serve()
        except BaseException:
            log.exception("fork server crashed")
            code = 1
        finally:
            os._exit(code)
    child_end.close()
    parent_end.setblocking(False)
    return ForkServerClient(parent_end, pid)


class FreshForkServer(ForkServerClient):
    """A fork server started by exec for a code reload (see the module docstring)."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(sock, proc.pid)
        self.proc = proc

    def close(self) -> None:
        super().close()               # its workers are killed, and it exits
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def exec_fresh(modules: list[str], app_dir: str, overrides: dict[str, Any],
               heartbeat: float, log_level: str) -> FreshForkServer:
    """Start a fork server in a new interpreter that imports the handler code afresh."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    args = {"fd": child_end.fileno(), "modules": modules, "app_dir": app_dir,
            "overrides": overrides, "heartbeat": heartbeat, "parent": os.getpid(),
            "log_level": log_level}
    proc = subprocess.Popen([sys.executable, "-m", "jobd.pool.forkserver", orjson.dumps(args)],
                            pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL)
    child_end.close()
    parent_end.setblocking(False)
    return FreshForkServer(parent_end, proc)


def _fresh_main(raw: str) -> int:
    """`python -m jobd.pool.forkserver ARGS`: import, report, serve."""
    from jobd import handlers
    from jobd.errors import ConfigError
    from jobd.pool import child
    args = orjson.loads(raw)
    logging.basicConfig(level=args["log_level"].upper(), format="%(levelname)s %(name)s: %(message)s")
    ctl = socket.socket(fileno=args["fd"])
    try:
        empty = handlers.load_modules(args["modules"], args["app_dir"])
        handlers.apply_overrides(args["overrides"])
    except (handlers.HandlerImportError, ConfigError) as e:
        ctl.send(orjson.dumps({"error": str(e)}))
        return 1
    for name in empty:
        log.warning("handler module %r registers no handler (no @handler function in it)", name)
    ctl.send(orjson.dumps({"registry": handlers.describe(handlers.registry())}))
    hb = args["heartbeat"]
    _ForkServer(ctl, lambda sock, wid: child.main(sock, wid, hb), args["parent"]).serve()
    return 0


class _ForkServer:
    def __init__(self, ctl: socket.socket, worker_main: Callable[[socket.socket, int], None],
                 parent_pid: int) -> None:
        self.ctl = ctl
        self.worker_main = worker_main
        self.children: dict[int, int] = {}     # pid → worker_id
        die_with_parent()
        if os.getppid() != parent_pid:
            os._exit(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the daemon's
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        sel.register(self.wake_r, selectors.EVENT_READ, "chld")
        while True:
            for key, _ in sel.select():
                if key.data == "chld":
                    self._drain_wakeup()
                    self._reap()
                elif not self._handle_ctl():
                    self._shutdown()
                    return

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _handle_ctl(self) -> bool:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.ctl, 65536, 4)
        except InterruptedError:
            return True
        if not msg:
            return False
        request = orjson.loads(msg)
        if "spawn" in request and fds:
            self._spawn(request["spawn"], fds[0])
        for fd in fds[1:]:
            os.close(fd)
        return True

    def _spawn(self, worker_id: int, fd: int) -> None:
        pid = os.fork()
        if pid == 0:
            self._become_worker(worker_id, fd)
        os.close(fd)
        self.children[pid] = worker_id
        self._send({"spawned": worker_id, "pid": pid})

    def _become_worker(self, worker_id: int, fd: int) -> None:
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.ctl.close()
            die_with_parent()
            self.worker_main(socket.socket(fileno=fd), worker_id)
        except BaseException:
            log.exception("worker %d crashed", worker_id)
            code = 1
        finally:
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker_id = self.children.pop(pid, None)
            if worker_id is None:
                continue
            code, sig = describe_status(status)
            self._send({"exited": worker_id, "pid": pid, "code": code, "signal": sig})

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self.ctl.send(orjson.dumps(msg))
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise

    def _shutdown(self) -> None:
        """The daemon is gone: nobody owns these workers any more."""
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(len(self.children)):
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break


if __name__ == "__main__":
    sys.exit(_fresh_main(sys.argv[1]))
