"""Configuration: embedded defaults, then the TOML file, then env, then flags.

Config is plain data: frozen-by-convention dataclasses, one per TOML section.
Loading validates every key and type; a problem raises `ConfigError` naming
the key, which `jobd serve` turns into exit status 78 (EX_CONFIG).
"""
from __future__ import annotations

import dataclasses
import grp
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from jobd.core.values import handler_option
from jobd.errors import ConfigError, OpError
from jobd_client.paths import default_socket_path


@dataclass
class ServerConfig:
    socket: str = ""
    socket_mode: int = 0o660
    socket_group: str = ""
    allowed_uids: list[int] = field(default_factory=list)
    allowed_gids: list[int] = field(default_factory=list)
    max_request_bytes: int = 16 * 1024 * 1024
    max_connections: int = 1024
    max_unsent_bytes: int = 8 * 1024 * 1024   # a connection's unread replies; past it its requests wait
    busy_poll_us: int = 200        # most the loop polls before sleeping (adaptive; 0: off)


@dataclass
class QueueConfig:
    max_size: int = 1_000_000
    # JSON text of the args and kwargs that all jobs in memory may hold together
    max_args_bytes: int = 1024 * 1024 * 1024


@dataclass
class WorkersConfig:
    count: int = -1                      # -1: usable CPUs
    max_jobs_per_worker: int = 0         # 0: never recycle by count
    max_memory_mb: int = 0               # 0: never recycle by memory
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    shutdown_timeout: float = 30.0
    prefetch: int = 2                    # jobs sent ahead to a busy worker when a backlog waits


@dataclass
class RetryConfig:
    max_retries: int = 3
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True


@dataclass
class ResultsConfig:
    ttl: float = 7 * 24 * 3600.0
    inline_max_bytes: int = 1024 * 1024
    compress_min_bytes: int = 64 * 1024
    log_max_bytes: int = 1024 * 1024     # a job's captured output kept (the last bytes)


@dataclass
class DeadLetterConfig:
    max_size: int = 10_000
    retention_days: float = 30.0


@dataclass
class WalConfig:
    fsync: str = "always"
    fsync_interval_ms: int = 100
    segment_bytes: int = 64 * 1024 * 1024


@dataclass
class MonitoringConfig:
    metrics_listen: str = ""
    slow_job_threshold: float = 0.0      # 0: off


@dataclass
class BreakerConfig:
    """`[breaker]`: the defaults of the handler options of the same names
    (circuit breaker, quarantine and poison jobs; docs/flow-control.md)."""
    breaker_failures: int = 10           # consecutive failed attempts that open it (0: off)
    breaker_rate: float = 0.5            # or this share of failed attempts in the window
    breaker_window: float = 60.0         # seconds
    breaker_min_calls: int = 20          # attempts in the window before the rate counts
    breaker_cooldown: float = 30.0       # seconds open before a trial; doubles at each re-open
    breaker_max_cooldown: float = 600.0
    quarantine_after: int = 3            # opens within an hour that quarantine it (0: never)
    quarantine_crashes: int = 3          # jobs in a row that killed their worker (0: never)
    poison_after: int = 2                # a job that killed its worker this often: dead letter


BREAKER_OPTIONS = tuple(f.name for f in dataclasses.fields(BreakerConfig))


@dataclass
class AlertsConfig:
    """`[alerts]`: where alerts go and how often (docs/alerts.md); the rules'
    tables `[alerts.rules.NAME]` are in `rules`, checked by jobd/alerts/rules.py."""
    command: list[str] = field(default_factory=list)   # argv, no shell; the alert JSON on stdin
    webhook_url: str = ""                # POSTed an Alertmanager-shaped body
    webhook_secret_file: str = ""        # Standard Webhooks secret: signs the POSTs
    repeat_interval: float = 4 * 3600.0  # a firing alert is sent again this often
    interval: float = 5.0                # seconds between evaluations of the rules (at most 5)
    rules: dict[str, Any] = field(default_factory=dict)


@dataclass
class WebConfig:
    """`[web]`: the HTTP API and dashboard process, `jobd web` (docs/web.md). The
    daemon only checks the types; `jobd web` checks the values when it starts."""
    listen: str = "127.0.0.1:8790"
    token_file: str = ""                 # a mode-0600 file holding the bearer token
    read_only: bool = False              # 405 to every unsafe method
    # None: 127.0.0.1, localhost, ::1 and the listen host; a list replaces them
    allowed_hosts: list[str] | None = None


FSYNC_MODES = ("always", "interval", "never")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    dead_letter: DeadLetterConfig = field(default_factory=DeadLetterConfig)
    wal: WalConfig = field(default_factory=WalConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    handlers: list[str] = field(default_factory=list)
    handler: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)   # [queues."NAME"]
    schedule: list[dict[str, Any]] = field(default_factory=list)
    data_dir: str = ""
    app_dir: str = "."              # put first on sys.path before handler modules are imported
    log_level: str = "info"
    config_path: str = ""
    # Not config keys: the command-line flags this config was built with, so
    # that SIGHUP re-reads the file under the same flags (flags beat the file).
    overrides: dict[str, Any] = field(default_factory=dict)



SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_CLASSES = {
    "server": ServerConfig, "queue": QueueConfig, "workers": WorkersConfig,
    "retry": RetryConfig, "results": ResultsConfig,
    "dead_letter": DeadLetterConfig, "wal": WalConfig,
    "monitoring": MonitoringConfig, "breaker": BreakerConfig,
    "alerts": AlertsConfig, "web": WebConfig,
}
# Top-level keys a config file may hold besides the sections.
_TOP_LEVEL = {"handlers", "handler", "queues", "schedule", "data_dir", "app_dir", "log_level"}
HANDLER_OPTIONS = {"max_retries", "retry_delay", "retry_backoff", "timeout",
                   "priority", "max_concurrency", "name", "jitter", "max_delay", "no_retry_for",
                   "queue", "rate", "burst", *BREAKER_OPTIONS}
QUEUE_KEYS = {"workers": int, "max_size": int, "rate": str, "burst": int, "paused": bool}


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def default_data_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The default data dir: JOBD_DATA_DIR, STATE_DIRECTORY, XDG_STATE_HOME/jobd, ~/.local/state/jobd."""
    if env.get("JOBD_DATA_DIR"):
        return env["JOBD_DATA_DIR"]
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    if env.get("XDG_STATE_HOME"):
        return os.path.join(env["XDG_STATE_HOME"], "jobd")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "jobd")


def _check_type(key: str, value: Any, expected: Any) -> Any:
    """Validate `value` against a field type; ints are accepted for floats."""
    text = expected.__name__ if isinstance(expected, type) else str(expected)
    if text == "bool":
        ok = isinstance(value, bool)
    elif text == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif text == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif text == "str":
        ok = isinstance(value, str)
    elif text.startswith("list[int]"):
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value)
    elif text.startswith("list[str]"):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"config key {key!r}: expected {text}, got {type(value).__name__}")
    return value


def _apply_section(cfg: Config, name: str, table: Any) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"config key {name!r}: expected a table")
    section = getattr(cfg, name)
    hints = get_type_hints(type(section))
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"unknown config key '{name}.{key}'")
        value = _check_type(f"{name}.{key}", value, hints[key])
        if (name, key) == ("workers", "count") and value < 0:   # -1 is only the built-in "CPUs"
            raise ConfigError("config key 'workers.count': must be >= 0")
        setattr(section, key, value)


def _apply_top(cfg: Config, key: str, value: Any) -> None:
    if key == "handlers":
        cfg.handlers = _check_type(key, value, "list[str]")
    elif key in ("data_dir", "app_dir", "log_level"):
        setattr(cfg, key, _check_type(key, value, "str"))
    elif key == "handler":
        cfg.handler = _handler_overrides(value)
    elif key == "queues":
        cfg.queues = _queues(value)
    elif key == "schedule":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError("config key 'schedule': expected an array of tables")
        cfg.schedule = value


def _handler_overrides(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ConfigError("config key 'handler': expected a table of tables")
    for name, opts in value.items():
        if not isinstance(opts, dict):
            raise ConfigError(f"config key 'handler.\"{name}\"': expected a table")
        for key, option in opts.items():
            where = f"handler.\"{name}\".{key}"
            if key not in HANDLER_OPTIONS:
                raise ConfigError(f"unknown config key '{where}'")
            try:
                handler_option(key, option)
            except OpError as e:
                raise ConfigError(f"config key '{where}': {e.message.split(': ', 1)[-1]}") from None
            if key == "name" and option != name:
                raise ConfigError(f"config key '{where}': the table's name is the handler's "
                                  f"name; it cannot be renamed here")
    return value


def _queues(value: Any) -> dict[str, dict[str, Any]]:
    """`[queues."NAME"]` tables: workers, max_size, rate, burst, paused."""
    from jobd.core.values import queue_name, rate_text
    if not isinstance(value, dict):
        raise ConfigError("config key 'queues': expected a table of tables")
    for name, opts in value.items():
        where = f"queues.\"{name}\""
        try:
            queue_name(where, name)
        except OpError as e:
            raise ConfigError(f"config key {e.message}") from None
        if not isinstance(opts, dict):
            raise ConfigError(f"config key '{where}': expected a table")
        for key, option in opts.items():
            if key not in QUEUE_KEYS:
                raise ConfigError(f"unknown config key '{where}.{key}' (a queue takes "
                                  f"{', '.join(QUEUE_KEYS)})")
            _check_type(f"{where}.{key}", option, QUEUE_KEYS[key].__name__)
        if opts.get("workers", 1) < 0 or opts.get("workers", 1) > 1024:
            raise ConfigError(f"config key '{where}.workers': must be between 0 and 1024")
        if name == "default" and "workers" in opts:
            raise ConfigError(f"config key '{where}.workers': the default queue's pool is "
                              "[workers] count")
        if opts.get("max_size", 0) < 0:
            raise ConfigError(f"config key '{where}.max_size': must be >= 0")
        if not 1 <= opts.get("burst", 1) <= 1_000_000:
            raise ConfigError(f"config key '{where}.burst': must be between 1 and 1000000")
        if "rate" in opts:
            try:
                rate_text("rate", opts["rate"])
            except OpError as e:
                raise ConfigError(f"config key '{where}.rate': "
                                  f"{e.message.split(': ', 1)[-1]}") from None
    return value


def check_handler_names(cfg: Config, registry: Any) -> None:
    """Once handler modules are imported: a `[handler."NAME"]` table must name a
    registered handler (a misspelt name would silently lose its overrides),
    and every handler's queue must be configured."""
    for name in cfg.handler:
        if name not in registry:
            raise ConfigError(f"config key 'handler.\"{name}\"': no handler named {name!r} "
                              f"is registered by the handler modules")
    for name, spec in registry.items():
        queue = cfg.handler.get(name, {}).get("queue", spec.options.get("queue"))
        if queue and queue != "default" and queue not in cfg.queues:
            where = (f"config key 'handler.\"{name}\".queue'" if "queue" in cfg.handler.get(name, {})
                     else f"handler {name!r} (@handler(queue=...))")
            raise ConfigError(f"{where}: no queue named {queue!r} is configured; add a "
                              f"[queues.\"{queue}\"] table")


def load_file(cfg: Config, path: str) -> None:
    """Read a TOML file into `cfg`, validating every key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from None
    for key, value in data.items():
        if key in _SECTION_CLASSES:
            _apply_section(cfg, key, value)
        elif key in _TOP_LEVEL:
            _apply_top(cfg, key, value)
        else:
            raise ConfigError(f"unknown config key '{key}'")
    cfg.config_path = path


def validate(cfg: Config) -> None:
    """Range checks that the type system cannot express."""
    checks = [
        (cfg.wal.fsync in FSYNC_MODES, "wal.fsync", f"one of {', '.join(FSYNC_MODES)}"),
        (cfg.log_level.lower() in LOG_LEVELS, "log_level", f"one of {', '.join(LOG_LEVELS)}"),
        (cfg.workers.count >= -1, "workers.count", ">= 0"),
        (cfg.queue.max_size > 0, "queue.max_size", "> 0"),
        (cfg.queue.max_args_bytes > 0, "queue.max_args_bytes", "> 0"),
        (cfg.server.max_request_bytes >= 1024, "server.max_request_bytes", ">= 1024"),
        (cfg.server.max_connections > 0, "server.max_connections", "> 0"),
        (cfg.server.max_unsent_bytes >= 65536, "server.max_unsent_bytes", ">= 65536"),
        (0 <= cfg.server.busy_poll_us <= 10_000, "server.busy_poll_us", "between 0 and 10000"),
        (0 <= cfg.server.socket_mode <= 0o777, "server.socket_mode", "a file mode"),
        (cfg.retry.max_retries >= 0, "retry.max_retries", ">= 0"),
        (cfg.retry.retry_delay >= 0, "retry.retry_delay", ">= 0"),
        (cfg.retry.retry_backoff >= 1, "retry.retry_backoff", ">= 1"),
        (cfg.retry.max_delay >= 0, "retry.max_delay", ">= 0"),
        (cfg.workers.heartbeat_interval > 0, "workers.heartbeat_interval", "> 0"),
        (cfg.workers.heartbeat_timeout > cfg.workers.heartbeat_interval,
         "workers.heartbeat_timeout", "> heartbeat_interval"),
        (cfg.workers.shutdown_timeout >= 0, "workers.shutdown_timeout", ">= 0"),
        (0 <= cfg.workers.prefetch <= 64, "workers.prefetch", "between 0 and 64"),
        (cfg.wal.fsync_interval_ms > 0, "wal.fsync_interval_ms", "> 0"),
        (cfg.wal.segment_bytes >= 4096, "wal.segment_bytes", ">= 4096"),
        (cfg.results.ttl > 0, "results.ttl", "> 0"),
        (cfg.results.log_max_bytes >= 1024, "results.log_max_bytes", ">= 1024"),
        (cfg.dead_letter.max_size > 0, "dead_letter.max_size", "> 0"),
    ]
    for key in BREAKER_OPTIONS:
        try:
            handler_option(key, getattr(cfg.breaker, key))
        except OpError as e:
            raise ConfigError(f"config key 'breaker.{key}': {e.message.split(': ', 1)[-1]}") from None
    for ok, key, expect in checks:
        if not ok:
            raise ConfigError(f"config key '{key}': must be {expect}")
    if cfg.server.socket_group:
        try:
            grp.getgrnam(cfg.server.socket_group)
        except KeyError:
            raise ConfigError(f"config key 'server.socket_group': no group named "
                              f"{cfg.server.socket_group!r} on this host") from None
    if cfg.monitoring.metrics_listen:
        from jobd.server.http import parse_listen
        try:
            parse_listen(cfg.monitoring.metrics_listen)
        except ValueError as e:
            raise ConfigError(f"config key 'monitoring.metrics_listen': {e}") from None
    _check_alerts(cfg.alerts)
    from jobd.scheduling.specs import check_config
    check_config(cfg.schedule)          # handlers are checked once they are imported


def _check_alerts(a: AlertsConfig) -> None:
    from jobd.alerts.delivery import load_secret
    from jobd.alerts.rules import rule_specs
    if not 0 < a.interval <= 5:
        raise ConfigError("config key 'alerts.interval': must be > 0 and <= 5")
    if a.repeat_interval <= 0:
        raise ConfigError("config key 'alerts.repeat_interval': must be > 0")
    if a.webhook_url and not a.webhook_url.startswith(("http://", "https://")):
        raise ConfigError("config key 'alerts.webhook_url': must be an http:// or https:// URL")
    if a.webhook_secret_file and not a.webhook_url:
        raise ConfigError("config key 'alerts.webhook_secret_file': needs alerts.webhook_url")
    if a.webhook_secret_file:
        try:
            load_secret(a.webhook_secret_file)
        except (OSError, ValueError) as e:
            raise ConfigError(f"config key 'alerts.webhook_secret_file': {e}") from None
    if not isinstance(a.rules, dict):
        raise ConfigError("config key 'alerts.rules': expected a table of tables")
    try:
        rule_specs(a.rules)
    except ValueError as e:
        raise ConfigError(f"config key {e}") from None


def load(path: str | None = None, env: os._Environ[str] | dict[str, str] = os.environ,
         overrides: dict[str, Any] | None = None) -> Config:
    """Build the effective config (docs/configuration.md): embedded defaults, which read the
    environment (`JOBD_SOCKET`, `JOBD_DATA_DIR`, systemd's and XDG's
    directories), < the file < command-line flags (`overrides`)."""
    cfg = Config()
    path = path or env.get("JOBD_CONFIG") or None
    if path:
        load_file(cfg, path)
    cfg.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for dotted, value in cfg.overrides.items():
        section, _, key = dotted.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, key, value)
    cfg.server.socket = cfg.server.socket or env.get("JOBD_SOCKET") or default_socket_path()
    cfg.data_dir = cfg.data_dir or default_data_dir(env)
    if cfg.workers.count == -1:
        cfg.workers.count = usable_cpus()
    validate(cfg)
    return cfg


def ensure_dir(path: str) -> None:
    """Create a private directory (0700) if it is missing, and every missing
    parent 0700 too (`mkdir -p` would give parents the umask's mode, 0777
    under umask 0). Existing directories are left as they are."""
    missing = []
    p = Path(path).absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)           # the umask can only narrow 0700
        except FileExistsError:
            pass


# What SIGHUP applies (the handler code is reloaded with its modules, app dir and
# [handler."NAME"] options); every other key needs a restart (the daemon says which).
RELOADABLE = frozenset({"workers.count", "log_level", "schedule", "handlers", "app_dir",
                        "handler", "queues"})


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the config keys whose values differ (sections key by key)."""
    out = []
    for f in dataclasses.fields(Config):
        if f.name in ("config_path", "overrides", "web"):   # [web] is jobd web's, not the daemon's
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(a)
                    if getattr(a, g.name) != getattr(b, g.name)]
        elif a != b:
            out.append(f.name)
    return out
