"""What `jobd web` runs with: the `[web]` config section, overridden by flags,
checked once at start. Plain data; a bad value raises ConfigError naming the
key (`jobd web` exits 78, as the daemon does for its own keys)."""
from __future__ import annotations

import argparse
import ipaddress
import os
import stat
import string
from dataclasses import dataclass, field

from jobd.config import Config, WebConfig
from jobd.errors import ConfigError
from jobd_client.paths import default_socket_path

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 1024 * 1024         # a request body above this is refused (413)
MIN_TOKEN_CHARS = 16
# What a token may hold: it travels in a header, a cookie and a URL unescaped
# (secrets.token_urlsafe() and hex tokens fit).
TOKEN_PUNCTUATION = "-._~+/="
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + TOKEN_PUNCTUATION)


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8790
    uds: str = ""                        # serve on this Unix socket instead of TCP
    socket: str | None = None            # the daemon's socket; None: the client's lookup
    token: str = ""                      # "" when no token file is configured
    token_file: str = ""
    read_only: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_size: int = 1_000_000            # [queue] max_size, shown as the queue's size
    max_body_bytes: int = MAX_BODY_BYTES

    @property
    def url(self) -> str:
        if self.uds:
            return f"unix:{self.uds}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def parse_listen(value: str) -> tuple[str, int]:
    """"127.0.0.1:8790" / "[::1]:8790" / "localhost:8790" → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"config key 'web.listen': must look like HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The token in `path`, which must be a regular file of mode 0600 (or stricter):
    a token others can read is no secret."""
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise ConfigError(f"config key 'web.token_file': cannot read {path}: "
                          f"{e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        raise ConfigError(f"config key 'web.token_file': {path} must be a file of mode 0600 "
                          f"(it is {stat.S_IMODE(info.st_mode):04o}); run chmod 600 {path}")
    if len(token) < MIN_TOKEN_CHARS or not all(c in TOKEN_CHARS for c in token):
        raise ConfigError(f"config key 'web.token_file': {path} must hold one token of at least "
                          f"{MIN_TOKEN_CHARS} characters: letters, digits and {TOKEN_PUNCTUATION}")
    return token


def merged(web: WebConfig, args: argparse.Namespace) -> WebConfig:
    """The `[web]` section with the flags given on top (flags win)."""
    return WebConfig(
        listen=args.listen or web.listen,
        token_file=args.token_file or web.token_file,
        read_only=bool(args.read_only) or web.read_only,
        allowed_hosts=web.allowed_hosts,
    )


def build(cfg: Config, args: argparse.Namespace) -> WebSettings:
    """Check the effective `[web]` values and build the settings, or raise ConfigError."""
    web = merged(cfg.web, args)
    host, port = parse_listen(web.listen)
    uds = args.uds or ""
    token = read_token(web.token_file) if web.token_file else ""
    if not uds and not is_loopback(host) and not token:
        raise ConfigError(f"config key 'web.listen': {web.listen} is not a loopback address; "
                          "serving beyond this host needs web.token_file (--token-file)")
    hosts = web.allowed_hosts if web.allowed_hosts is not None else [*LOOPBACK_NAMES, host]
    if any(not h or any(c.isspace() for c in h) for h in hosts):
        raise ConfigError("config key 'web.allowed_hosts': host names must be non-empty, no spaces")
    return WebSettings(host=host, port=port, uds=uds, socket=daemon_socket(cfg, args),
                       token=token, token_file=web.token_file, read_only=web.read_only,
                       allowed_hosts=frozenset(h.lower() for h in hosts),
                       max_size=cfg.queue.max_size)


def daemon_socket(cfg: Config, args: argparse.Namespace) -> str | None:
    """`--socket`, else `[server] socket` when the config file sets one, else None:
    the client's own lookup (which also tries the system service's socket)."""
    if args.socket:
        return str(args.socket)
    configured = cfg.server.socket
    return configured if configured and configured != default_socket_path() else None
