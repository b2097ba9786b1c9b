"""Values and the rules they must meet, shared by requests, config and
`@handler` options (pure): numbers, priorities, times the job view can show,
JSON that a job may hold. A bad value raises `invalid_argument` naming its
field; config turns that into a config error naming the key.
"""
from __future__ import annotations

import math
import re
from typing import Any

import orjson

from jobd import constants as C
from jobd.errors import invalid

MAX_NAME = 256
MAX_TAGS = 64
MAX_TIMESTAMP = 253402300799.0     # 9999-12-31T23:59:59Z: the last second ISO 8601 shows
MIN_TIMESTAMP = -62135596800.0     # 0001-01-01T00:00:00Z
# orjson refuses to encode more than 254 levels of nesting; the daemon wraps
# args/kwargs in a few levels of its own (WAL record, `list` reply, worker
# frame), so a submit must leave this much room below that limit.
NESTING_HEADROOM = 16


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


_SCALARS = (str, int, float, bool, type(None))
_dumps = orjson.dumps


def compact_json(field: str, value: list[Any] | dict[str, Any]) -> bytes:
    """`value` as compact JSON text, the form a job keeps its args and kwargs
    in (jobd/core/job.py). Refused (`invalid_argument` naming the field): values
    nested too deeply for the daemon to write back inside its own records,
    and NaN or Infinity (which JSON cannot carry; TOML config can)."""
    items = value.values() if isinstance(value, dict) else value
    if len(items) < 64 and all(isinstance(v, _SCALARS) for v in items):
        data = _dumps(value)            # flat: the common case, checked cheaply
    else:
        wrapped: Any = value
        for _ in range(NESTING_HEADROOM):
            wrapped = [wrapped]
        try:
            data = _dumps(wrapped)[NESTING_HEADROOM:-NESTING_HEADROOM]
        except orjson.JSONEncodeError:
            raise invalid(field, "is nested too deeply") from None
    if b"null" in data:                 # orjson writes NaN and Infinity as null
        where = non_finite_path(value)
        if where is not None:
            raise invalid(field + where, "NaN and Infinity are not JSON numbers")
    return data


def non_finite_path(value: Any) -> str | None:
    """Where the first NaN or ±Infinity in a JSON-like value is (`[2].x`), or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return path
        elif isinstance(item, dict):
            stack.extend((v, f"{path}.{k}") for k, v in reversed(item.items()))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def get_int(req: dict[str, Any], field: str, default: Any, lo: int, hi: int | None = None) -> Any:
    v = req.get(field)
    if v is None:
        return default
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise invalid(field, f"must be an integer {bound}, got {v!r}")
    return v


def get_number(req: dict[str, Any], field: str, default: Any, lo: float = 0.0,
               positive: bool = False) -> Any:
    v = req.get(field)
    if v is None:
        return default
    if not _is_number(v) or v < lo or (positive and v <= 0) or v > MAX_TIMESTAMP:
        what = "a positive number" if positive else f"a number >= {lo:g}"
        raise invalid(field, f"must be {what}, got {v!r}")
    return float(v)


def get_str(req: dict[str, Any], field: str, default: Any = None, limit: int = MAX_NAME) -> Any:
    v = req.get(field)
    if v is None:
        return default
    if not isinstance(v, str) or len(v) > limit:
        raise invalid(field, f"must be a string of at most {limit} characters")
    return v


def get_bool(req: dict[str, Any], field: str, default: bool) -> bool:
    v = req.get(field)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise invalid(field, f"must be true or false, got {v!r}")
    return v


def priority_value(v: Any, field: str = "priority") -> int:
    """An integer 0..1000 or one of the names low/normal/high/critical."""
    if isinstance(v, str) and v in C.PRIORITY_NAMES:
        return C.PRIORITY_NAMES[v]
    if _is_int(v) and C.PRIORITY_MIN <= v <= C.PRIORITY_MAX:
        return int(v)
    raise invalid(field, f"must be an integer 0..1000 or one of "
                         f"{', '.join(C.PRIORITY_NAMES)}, got {v!r}")


def handler_option(key: str, value: Any) -> None:
    """Check one `@handler(...)` / `[handler."NAME"]` option by the rules a submit's
    argument of the same name follows; raises `invalid_argument` naming it."""
    opts = {key: value}
    if key == "name":
        if not isinstance(value, str) or not value:
            raise invalid(key, f"must be a non-empty string, got {value!r}")
    elif key == "priority":
        priority_value(value, key)
    elif key == "max_retries":
        get_int(opts, key, None, 0, 1000)
    elif key == "max_concurrency":
        get_int(opts, key, None, 1)        # no limit: leave it out (None), never 0
    elif key in ("retry_delay", "max_delay"):
        get_number(opts, key, None)
    elif key == "retry_backoff":
        get_number(opts, key, None, lo=1.0)
    elif key == "timeout":
        get_number(opts, key, None, positive=True)
    elif key == "jitter":
        get_bool(opts, key, False)
    elif key == "no_retry_for":
        _exception_list(key, value)
    elif key == "queue":
        queue_name(key, value)
    elif key == "rate":
        rate_text(key, value)
    elif key == "burst":
        get_int(opts, key, None, 1, 1_000_000)
    elif key in ("breaker_failures", "quarantine_after", "quarantine_crashes", "poison_after"):
        get_int(opts, key, None, 0, 1_000_000)        # 0: off
    elif key == "breaker_min_calls":
        get_int(opts, key, None, 1, 1_000_000)
    elif key == "breaker_rate":
        v = get_number(opts, key, None, positive=True)
        if v > 1:
            raise invalid(key, f"must be a share of attempts in (0, 1], got {value!r}")
    elif key in ("breaker_window", "breaker_cooldown", "breaker_max_cooldown"):
        get_number(opts, key, None, positive=True)
    else:
        raise invalid(key, "unknown option")


QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def queue_name(field: str, value: Any) -> str:
    """A queue's name: 1-64 of A-Z a-z 0-9 . _ - (it labels metrics and CLI columns)."""
    if not isinstance(value, str) or not QUEUE_NAME_RE.match(value):
        raise invalid(field, f"must be a queue name (1-64 of A-Z a-z 0-9 . _ -, starting with "
                             f"a letter or digit), got {value!r}")
    return value


def rate_text(field: str, value: Any) -> str:
    """A rate limit: "N/s", "N/m" or "N/h"."""
    from jobd.core.flow import parse_rate
    try:
        parse_rate(value)
    except ValueError as e:
        raise invalid(field, str(e)) from None
    return str(value)


def _exception_list(key: str, value: Any) -> None:
    """A list of exception classes (`@handler`) or of their dotted names (config)."""
    ok = isinstance(value, (list, tuple)) and all(
        (isinstance(v, str) and v) or (isinstance(v, type) and issubclass(v, BaseException))
        for v in value)
    if not ok:
        raise invalid(key, "must be a list of exception classes (in config: their dotted names, "
                           f"e.g. [\"myapp.errors.BadInput\", \"ValueError\"]), got {value!r}")


def in_range(field: str, ts: float) -> float:
    """A time jobd stores must be one the job view can show: years 1 to 9999
    in UTC (an offset can carry a valid local time outside them)."""
    if not MIN_TIMESTAMP <= ts <= MAX_TIMESTAMP:
        raise invalid(field, "lands outside the years 1 to 9999 (UTC)")
    return ts
