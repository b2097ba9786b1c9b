"""The handler registry and the API handler code uses (docs/handlers.md).

Only functions registered with `@handler` can run: a submit names a
registered handler, never an arbitrary dotted path.
"""
from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, overload

from jobd.core.signature import Shape

OPTION_NAMES = frozenset({"name", "max_retries", "retry_delay", "retry_backoff",
                          "timeout", "priority", "max_concurrency", "jitter",
                          "max_delay", "no_retry_for", "queue", "rate", "burst",
                          "breaker_failures", "breaker_rate", "breaker_window",
                          "breaker_min_calls", "breaker_cooldown", "breaker_max_cooldown",
                          "quarantine_after", "quarantine_crashes", "poison_after"})


class PermanentError(Exception):
    """Raise from a handler to fail the job now, without retries."""


class Retry(Exception):
    """Raise from a handler to retry after exactly `after` seconds."""

    def __init__(self, after: float = 0.0, message: str = "") -> None:
        super().__init__(message or f"retry requested after {after}s")
        self.after = float(after)


class RateLimited(Exception):
    """Raise from a handler when the service it calls is limiting it (an
    HTTP 429, say): the attempt is not counted, the job goes back to
    `pending` in its place, and no job of this handler starts before
    `after` seconds from now (held `rate_limited`)."""

    def __init__(self, after: float = 1.0, message: str = "") -> None:
        super().__init__(message or f"rate limited for {after}s")
        self.after = float(after)


class Snooze(Exception):
    """Raise from a handler to run this job again in `after` seconds (it is
    `scheduled` until then) without counting the attempt."""

    def __init__(self, after: float = 1.0, message: str = "") -> None:
        super().__init__(message or f"snoozed for {after}s")
        self.after = float(after)


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    func: Callable[..., Any]
    is_async: bool
    options: dict[str, Any] = field(default_factory=dict)
    shape: Shape | None = None          # its parameters: a submit must bind to them

    @property
    def no_retry_for(self) -> tuple[type[BaseException], ...]:
        """Exception types that end the job `failed` at once, as PermanentError does."""
        return tuple(self.options.get("no_retry_for") or ())


_registry: dict[str, HandlerSpec] = {}


def registry() -> dict[str, HandlerSpec]:
    return _registry


def _register(func: Callable[..., Any], options: dict[str, Any]) -> Callable[..., Any]:
    unknown = set(options) - OPTION_NAMES
    if unknown:
        raise TypeError(f"@handler got unknown option(s): {', '.join(sorted(unknown))}")
    from jobd.core.values import handler_option
    from jobd.errors import OpError
    for key, value in options.items():
        if value is not None:           # None: not set (e.g. timeout=None, no timeout)
            try:
                handler_option(key, value)
            except OpError as e:
                raise TypeError(f"@handler option {e.message}") from None
    name = options.pop("name", None) or f"{func.__module__}.{func.__qualname__}"
    is_async = inspect.iscoroutinefunction(func)
    if options.get("no_retry_for") is not None:
        options["no_retry_for"] = tuple(options["no_retry_for"])
    _registry[name] = HandlerSpec(name, func, is_async, options, Shape.of(func))
    func.jobd_name = name  # type: ignore[attr-defined]
    return func


@overload
def handler(func: Callable[..., Any]) -> Callable[..., Any]: ...
@overload
def handler(func: None = None, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def handler(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Register a function as a job handler: `@handler` or `@handler(name=...)`."""
    if func is not None:
        return _register(func, options)
    return lambda f: _register(f, dict(options))


class HandlerImportError(Exception):
    """A handler module failed to import; the message names the module, the
    exception, and the file and line it was raised at."""


def apply_overrides(overrides: dict[str, dict[str, Any]]) -> None:
    """Merge `[handler."NAME"]` config into the registry where the worker needs
    it: `no_retry_for` (dotted class names, resolved here) replaces the
    decorator's. Raises ConfigError naming the key when a name does not resolve
    to an exception class."""
    from jobd.errors import ConfigError
    for name, opts in overrides.items():
        spec = _registry.get(name)
        if spec is None or "no_retry_for" not in opts:
            continue
        classes = []
        for dotted in opts["no_retry_for"]:
            try:
                classes.append(resolve_exception(dotted))
            except ValueError as e:
                raise ConfigError(f"config key 'handler.\"{name}\".no_retry_for': {e}") from None
        _registry[name] = replace(spec, options={**spec.options, "no_retry_for": tuple(classes)})


def resolve_exception(dotted: str) -> type[BaseException]:
    """`module.Class` (or a builtin's name, e.g. `ValueError`) as an exception class."""
    module, _, attr = dotted.rpartition(".")
    try:
        found = getattr(importlib.import_module(module or "builtins"), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot find {dotted!r}: {e}") from None
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise ValueError(f"{dotted!r} is not an exception class")
    return found


def describe(specs: dict[str, HandlerSpec]) -> dict[str, Any]:
    """The registry as JSON: what the daemon needs of each handler (its options
    and the shape of its parameters), sent by a fork server that imported
    new code (the daemon itself never imports it again)."""
    return {name: {"options": json_options(spec.options),
                   "shape": spec.shape.to_json() if spec.shape else None}
            for name, spec in specs.items()}


def json_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options with exception classes as their dotted names."""
    out = dict(options)
    if out.get("no_retry_for"):
        out["no_retry_for"] = [f"{c.__module__}.{c.__qualname__}" if isinstance(c, type) else c
                               for c in out["no_retry_for"]]
    return out


def _runs_in_workers(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("this handler's code is imported by the workers, not the daemon")


def from_description(described: dict[str, Any]) -> dict[str, HandlerSpec]:
    """`describe`'s JSON back as specs the daemon can check submits with."""
    return {name: HandlerSpec(name, _runs_in_workers, False, dict(d["options"]),
                              Shape.from_json(d["shape"]) if d["shape"] else None)
            for name, d in described.items()}


def load_modules(names: list[str], app_dir: str | None = None) -> list[str]:
    """Import handler modules (their `@handler` decorators fill the registry),
    with `app_dir` first on `sys.path`. Returns the modules that registered no
    handler (worth a warning: a typo in `--handlers`, or a module that forgot
    `@handler`)."""
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if path not in sys.path[:1]:
            sys.path.insert(0, path)
    empty = []
    for name in names:
        before = len(_registry)
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure is reported the same way
            raise HandlerImportError(describe_import_error(name, e, app_dir)) from e
        if len(_registry) == before:
            empty.append(name)
    return empty


def describe_import_error(name: str, e: BaseException, app_dir: str | None) -> str:
    """`cannot import handler module 'm': Type: message (file, line N)`."""
    where = _raised_at(e)
    text = f"cannot import handler module {name!r}: {type(e).__name__}: {e}"
    if where:
        text += f" ({where})"
    if isinstance(e, ModuleNotFoundError) and e.name and name.startswith(e.name.split(".")[0]):
        text += (f"; looked on sys.path with the app dir {os.path.abspath(app_dir or '.')!r} "
                 "first: run jobd from your project's directory, or give --app-dir")
    return text


def _raised_at(e: BaseException) -> str:
    """The file and line of the error: a syntax error's own, else the innermost frame."""
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}, line {e.lineno}"
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if "importlib" not in f.filename]
    if not own or isinstance(e, ModuleNotFoundError):
        return ""
    return f"{own[-1].filename}, line {own[-1].lineno}"


# --- the running job, as the handler sees it --------------------------------------
class JobContext:
    """What `current_job()` returns inside a handler."""

    __slots__ = ("id", "attempt", "handler", "tags", "_report", "_poll", "_cancelled")

    def __init__(self, job_id: str, attempt: int, handler_name: str, tags: dict[str, Any],
                 report: Callable[[float, float | None, str], None],
                 poll: Callable[[], None]) -> None:
        self.id = job_id
        self.attempt = attempt
        self.handler = handler_name
        self.tags = tags
        self._report = report
        self._poll = poll
        self._cancelled = False

    def progress(self, current: float, total: float | None = None, message: str = "") -> None:
        """Report progress; cheap to call often (the worker coalesces bursts).
        `current` and `total` must be finite numbers (JSON has no NaN or
        Infinity): anything else raises ValueError here, in the handler."""
        _check_progress_number("current", current)
        if total is not None:
            _check_progress_number("total", total)
        self._report(current, total, str(message))

    @property
    def cancel_requested(self) -> bool:
        """True once the job was cancelled (without force) while running."""
        if not self._cancelled:
            self._poll()
        return self._cancelled

    def _request_cancel(self) -> None:
        self._cancelled = True


def _check_progress_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"progress: {name} must be a finite number, got {value!r}")


_current: JobContext | None = None


def current_job() -> JobContext:
    """The job the calling handler is running."""
    if _current is None:
        raise RuntimeError("current_job() called outside a running jobd job")
    return _current


def set_current(ctx: JobContext | None) -> None:
    global _current
    _current = ctx
