"""Sending alert notices: the command and the webhook, retried with backoff.

Each target (the command, the webhook) has one `Courier`: a thread with a
FIFO of notices. The loop only appends to it (`put`, a lock and a notify);
everything slow (a receiver that hangs, a command that runs 10 s, backoff
sleeps) happens on the courier's thread, so it can never hold up the loop
or the jobs. A notice is retried at the head of its FIFO until it is
delivered or `max_age` has passed: notices reach a receiver in the order
they were raised (a resolve never overtakes its firing notice).

The command runs without a shell, from the courier thread: subprocess
forks and execs at once, the child runs no Python, so nothing of the loop's
state is used in the child (close_fds keeps the daemon's sockets out of it).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("jobd")

SEND_TIMEOUT_S = 10.0        # a command is killed, a webhook request abandoned, after this
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
MAX_AGE_S = 24 * 3600.0      # a notice undelivered this long is dropped (logged)
MAX_QUEUED = 1000            # notices waiting per target; past it the oldest is dropped
SECRET_PREFIX = "whsec_"


class DeliveryError(Exception):
    """A target refused or did not take a notice (retried)."""


class Target(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, notice_id: str, body: bytes) -> None: ...   # raises DeliveryError


@dataclass(frozen=True)
class CommandTarget:
    """Run `argv` (no shell) with the notice's JSON on stdin; exit 0 is delivered."""

    argv: list[str]
    timeout: float = SEND_TIMEOUT_S
    name: str = "command"

    def send(self, notice_id: str, body: bytes) -> None:
        try:
            done = subprocess.run(self.argv, input=body, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=self.timeout, close_fds=True,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise DeliveryError(f"killed after {self.timeout:g}s") from None
        except OSError as e:
            raise DeliveryError(f"cannot run {self.argv[0]!r}: {e}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-200:]
            raise DeliveryError(f"exited with {done.returncode}{': ' + tail if tail else ''}")


@dataclass(frozen=True)
class WebhookTarget:
    """POST the JSON to `url`; any 2xx is delivered. With a secret, the
    Standard Webhooks headers sign it."""

    url: str
    secret: bytes | None = None
    timeout: float = SEND_TIMEOUT_S
    user_agent: str = "jobd"
    name: str = "webhook"

    def send(self, notice_id: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": self.user_agent}
        if self.secret is not None:
            headers.update(sign_headers(self.secret, notice_id, int(time.time()), body))
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:   # noqa: S310
                resp.read(65536)
        except urllib.error.HTTPError as e:
            raise DeliveryError(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DeliveryError(str(getattr(e, "reason", e))) from None


def sign_headers(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks: `webhook-signature` is `v1,` + base64 of
    HMAC-SHA256(secret, "{id}.{timestamp}.{body}")."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret, signed, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def load_secret(path: str) -> bytes:
    """The key bytes of a Standard Webhooks secret file (`whsec_` + base64)."""
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"{path}: a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{path}: the text after {SECRET_PREFIX!r} is not base64") from None
    if not key:
        raise ValueError(f"{path}: the secret is empty")
    return key


def backoff(attempts: int, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S) -> float:
    """Seconds before attempt `attempts + 1`: doubling from `first`, jittered ±20%."""
    return float(min(cap, first * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2))


@dataclass
class _Item:
    notice_id: str
    body: bytes
    queued_at: float
    attempts: int = 0


Done = Callable[[str, str, bool], None]    # (notice id, target name, delivered)


class Courier:
    """One target's FIFO and the thread that empties it. `done` is called
    from the thread once a notice is delivered (or given up)."""

    def __init__(self, target: Target, done: Done, first_backoff: float = BACKOFF_FIRST_S,
                 max_age: float = MAX_AGE_S) -> None:
        self.target = target
        self.done = done
        self.first_backoff = first_backoff
        self.max_age = max_age
        self.items: deque[_Item] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"jobd-alerts-{target.name}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, notice_id: str, body: bytes) -> None:
        with self.cond:
            if len(self.items) >= MAX_QUEUED:
                dropped = self.items.popleft()
                log.error("alerts: %s has %d notices waiting; dropped the oldest (%s)",
                          self.target.name, MAX_QUEUED, dropped.notice_id)
            self.items.append(_Item(notice_id, body, time.monotonic()))
            self.cond.notify()

    def stop(self, timeout: float) -> None:
        """Stop after the current attempt; undelivered notices stay in the
        service's durable outbox and are sent after the next start."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.items and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                item = self.items[0]
            delivered = self._attempt(item)
            if delivered is not None:
                with self.cond:
                    if self.items and self.items[0] is item:
                        self.items.popleft()
                self.done(item.notice_id, self.target.name, delivered)

    def _attempt(self, item: _Item) -> bool | None:
        """True: delivered; False: given up; None: wait and retry."""
        item.attempts += 1
        try:
            self.target.send(item.notice_id, item.body)
        except DeliveryError as e:
            if time.monotonic() - item.queued_at > self.max_age:
                log.error("alerts: gave up sending %s to %s after %d attempts: %s",
                          item.notice_id, self.target.name, item.attempts, e)
                return False
            delay = backoff(item.attempts, self.first_backoff)
            log.warning("alerts: sending %s to %s failed (attempt %d): %s; next try in %.1fs",
                        item.notice_id, self.target.name, item.attempts, e, delay)
            with self.cond:
                self.cond.wait_for(lambda: self.stopping, delay)
            return None
        except Exception:  # noqa: BLE001 - the courier thread must outlive a bug in a send
            log.exception("alerts: sending %s to %s failed", item.notice_id, self.target.name)
            return False
        log.info("alerts: sent %s to %s", item.notice_id, self.target.name)
        return True
