"""The security gate in front of every request (docs/web.md, "Security").

In order: the `Host` header must be one of `allowed_hosts` (DNS rebinding);
with a token file every request carries the token (bearer header, or the
cookie that the one-time `/?token=...` link sets); with `read_only` every
unsafe method is refused; an unsafe method from another site (its
`Sec-Fetch-Site` is not `same-origin`) is refused unless it has the bearer
token; a body above the limit is refused. Every response, refusals included,
gets the same security headers.
"""
from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from jobd.web.errors import (
    E_BAD_HOST,
    E_FORBIDDEN,
    E_READ_ONLY,
    E_TOO_LARGE,
    E_UNAUTHORIZED,
    error_body,
)
from jobd.web.settings import WebSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
COOKIE = "jobd_web_token"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                 b"form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class BodyTooLarge(Exception):
    """The request body went past the limit while it was read."""


class Guard:
    """ASGI middleware: the checks above, then the app."""

    def __init__(self, app: ASGIApp, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings
        self.token = settings.token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = with_headers(send)
        headers = header_map(scope)
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            await respond(send, *refusal)
            return
        if self.is_login(scope):
            await self.login(scope, send)
            return
        await self.forward(scope, receive, send)

    def refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str, str] | None:
        """(status, code, message) when the request must not reach the app."""
        if host_name(headers.get(b"host", b"")) not in self.settings.allowed_hosts:
            return 400, E_BAD_HOST, "Host header not allowed (set web.allowed_hosts to serve under this name)"
        bearer = self.has_bearer(headers)
        if self.token and not (bearer or self.has_cookie(headers) or self.is_login(scope)):
            return 401, E_UNAUTHORIZED, "a token is required: Authorization: Bearer <token>, " \
                                        "or open the /?token=... link printed at start"
        if scope["method"] in UNSAFE_METHODS:
            unsafe = self.unsafe_refusal(headers, bearer)
            if unsafe is not None:
                return unsafe
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.settings.max_body_bytes:
            return self.too_large()
        return None

    def unsafe_refusal(self, headers: dict[bytes, bytes], bearer: bool) -> tuple[int, str, str] | None:
        if self.settings.read_only:
            return 405, E_READ_ONLY, "jobd web runs read-only: no changes are accepted"
        if bearer:
            return None
        site = headers.get(b"sec-fetch-site")
        if site is not None and site != b"same-origin":
            return 403, E_FORBIDDEN, f"cross-site request refused (Sec-Fetch-Site: {site.decode('latin-1')})"
        origin = headers.get(b"origin")
        if site is None and origin is not None and not same_origin(origin, headers.get(b"host", b"")):
            # A browser too old to send Sec-Fetch-Site still sends Origin on a cross-site POST.
            return 403, E_FORBIDDEN, f"cross-site request refused (Origin: {origin.decode('latin-1')})"
        return None

    def too_large(self) -> tuple[int, str, str]:
        return 413, E_TOO_LARGE, f"request body above {self.settings.max_body_bytes} bytes"

    def has_bearer(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        return bool(self.token) and scheme.lower() == b"bearer" and self.matches(value.strip())

    def has_cookie(self, headers: dict[bytes, bytes]) -> bool:
        return self.matches(cookie_value(headers.get(b"cookie", b""), COOKIE.encode()))

    def matches(self, candidate: bytes | None) -> bool:
        return bool(self.token) and candidate is not None and hmac.compare_digest(candidate, self.token)

    def is_login(self, scope: Scope) -> bool:
        """The one-time link: `GET /?token=...` with the right token."""
        if not self.token or scope["path"] != "/" or scope["method"] != "GET":
            return False
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        return len(values) == 1 and self.matches(values[0].encode("latin-1"))

    async def login(self, scope: Scope, send: Send) -> None:
        """Exchange the link for an HttpOnly, SameSite=Strict cookie and go to `/`,
        so the token leaves the address bar and the history."""
        cookie = f"{COOKIE}={self.settings.token}; HttpOnly; SameSite=Strict; Path=/".encode()
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/"), (b"set-cookie", cookie),
                                (b"cache-control", b"no-store"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, limited(receive, self.settings.max_body_bytes), tracking_send)
        except BodyTooLarge:
            if not started:
                await respond(send, *self.too_large())


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """Request headers by lower-case name (the last of repeated ones)."""
    return {k.lower(): v for k, v in scope.get("headers", [])}


def host_name(host: bytes) -> str:
    """The host of a Host header, without the port: "[::1]:8790" → "::1"."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


def same_origin(origin: bytes, host: bytes) -> bool:
    """Whether an Origin header ("http://host:port") names the Host the request was sent to."""
    scheme, sep, rest = origin.partition(b"://")
    return bool(sep) and scheme in (b"http", b"https") and rest.lower() == host.strip().lower()


def cookie_value(header: bytes, name: bytes) -> bytes | None:
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value
    return None


def limited(receive: Receive, limit: int) -> Receive:
    """`receive` that raises BodyTooLarge once the body passes `limit` bytes
    (a chunked body has no Content-Length to check beforehand)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge()
        return message
    return wrapped


def with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
        await send(message)
    return wrapped


async def respond(send: Send, status: int, code: str, message: str) -> None:
    body = error_body(code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="jobd"'))
    elif status == 405:
        headers.append((b"allow", b"GET, HEAD"))          # read-only: what is left
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
