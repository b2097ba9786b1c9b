"""Argument checking for ops: every bad field is an `invalid_argument` naming it.

Nothing here touches state; `parse_submit` turns a submit request into a
`SubmitSpec` that the queue then admits (or rejects) as a whole.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from jobd import constants as C
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, parse_iso
from jobd.errors import invalid

JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}\Z")   # \Z: no trailing newline
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


def get_job_id(req: dict[str, Any], field: str = "job_id", required: bool = True) -> Any:
    v = req.get(field)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not JOB_ID_RE.match(v):
        raise invalid(field, "must be a job id string (1-128 of A-Z a-z 0-9 . _ : @ / + -)")
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
    else:
        raise invalid(key, "unknown option")


def get_status(req: dict[str, Any], field: str = "status",
               allowed: frozenset[str] | tuple[str, ...] = C.STATUSES) -> Any:
    v = req.get(field)
    if v is None:
        return None
    if not isinstance(v, str) or v not in allowed:
        raise invalid(field, f"must be one of {', '.join(sorted(allowed))}, got {v!r}")
    return v


def _tags(req: dict[str, Any]) -> dict[str, Any]:
    v = req.get("tags")
    if v is None:
        return EMPTY_DICT
    if not isinstance(v, dict) or len(v) > MAX_TAGS:
        raise invalid("tags", f"must be an object of at most {MAX_TAGS} entries")
    for key, value in v.items():
        if len(key) > MAX_NAME or not isinstance(value, (str, int, float, bool)) \
                or (isinstance(value, str) and len(value) > 1024) \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise invalid("tags", f"tag {key!r} must map to a string, finite number or bool")
    return v or EMPTY_DICT


def _depends_on(req: dict[str, Any]) -> list[str]:
    v = req.get("depends_on")
    if v is None or v == []:
        return EMPTY_LIST
    if not isinstance(v, list) or len(v) > 1000:
        raise invalid("depends_on", "must be a list of job ids")
    for item in v:
        if not isinstance(item, str) or not JOB_ID_RE.match(item):
            raise invalid("depends_on", f"{item!r} is not a job id")
    return list(dict.fromkeys(v))


SUBMIT_FIELDS = frozenset({
    "op", "id", "handler", "args", "kwargs", "priority", "max_retries",
    "retry_delay", "retry_backoff", "timeout", "tags", "name", "depends_on",
    "delay", "run_at", "job_id",
})


@dataclass(slots=True)
class SubmitSpec:
    """A validated submit, not yet admitted. `args`/`kwargs` are the decoded
    values (a schedule keeps them), `args_json`/`kwargs_json` the compact text
    a job keeps (`compact_json`)."""
    job_id: str | None
    handler: str
    args: list[Any]
    kwargs: dict[str, Any]
    args_json: bytes
    kwargs_json: bytes
    priority: int | None
    max_retries: int | None
    retry_delay: float | None
    retry_backoff: float | None
    timeout: float | None
    tags: dict[str, Any]
    name: str | None
    depends_on: list[str]
    run_at: float | None       # absolute epoch seconds, from delay or run_at
    has_timeout: bool
    plain: bool = False        # only handler/args/kwargs/job_id: every option from defaults


def _run_at(req: dict[str, Any], now: float) -> float | None:
    delay, run_at = req.get("delay"), req.get("run_at")
    if delay is not None and run_at is not None:
        raise invalid("delay", "give either delay or run_at, not both")
    if delay is not None:
        return _in_range("delay", now + get_number(req, "delay", 0.0))
    if run_at is None:
        return None
    if not isinstance(run_at, str):
        raise invalid("run_at", "must be an ISO 8601 timestamp string")
    try:
        ts = parse_iso(run_at)
    except (ValueError, OverflowError):
        raise invalid("run_at", f"not an ISO 8601 timestamp: {run_at!r}") from None
    return _in_range("run_at", ts)


def _in_range(field: str, ts: float) -> float:
    """A time jobd stores must be one the job view can show: years 1 to 9999
    in UTC (an offset can carry a valid local time outside them)."""
    if not MIN_TIMESTAMP <= ts <= MAX_TIMESTAMP:
        raise invalid(field, "lands outside the years 1 to 9999 (UTC)")
    return ts


def parse_submit(req: Any, now: float) -> SubmitSpec:
    """Check every field of a submit request (SPEC §5)."""
    if not isinstance(req, dict):
        raise invalid("jobs", "each job must be an object")
    if req.keys() <= _PLAIN_FIELDS:
        return _parse_plain(req)
    return _parse_full(req, now)


# A submit with only these fields (the common case) takes a shorter path.
_PLAIN_FIELDS = frozenset({"op", "id", "handler", "args", "kwargs", "job_id"})


def _handler(req: dict[str, Any]) -> str:
    handler = req.get("handler")
    if not isinstance(handler, str) or not handler:
        raise invalid("handler", "required: the name of a registered handler")
    return handler


def _args(args: Any) -> tuple[list[Any], bytes]:
    """(a submit's `args`, their compact JSON text); `args` is not None."""
    if type(args) is not list:
        raise invalid("args", "must be a list")
    return (args, compact_json("args", args)) if args else (EMPTY_LIST, EMPTY_ARGS)


def _kwargs(kwargs: Any) -> tuple[dict[str, Any], bytes]:
    if type(kwargs) is not dict:
        raise invalid("kwargs", "must be an object")
    return (kwargs, compact_json("kwargs", kwargs)) if kwargs else (EMPTY_DICT, EMPTY_KWARGS)


_NO_ARGS = (EMPTY_LIST, EMPTY_ARGS)
_NO_KWARGS = (EMPTY_DICT, EMPTY_KWARGS)


def is_plain(req: dict[str, Any]) -> bool:
    """Only handler/args/kwargs/job_id (the common submit): `parse_plain` applies."""
    return req.keys() <= _PLAIN_FIELDS


def parse_plain(req: dict[str, Any]) -> tuple[str, bytes, bytes, str | None]:
    """(handler, args JSON, kwargs JSON, job_id) of a plain submit, checked.
    The submit hot path: the usual absent fields cost one lookup each."""
    handler = _handler(req)
    args = req.get("args")
    kwargs = req.get("kwargs")
    job_id = req.get("job_id")
    return (handler, EMPTY_ARGS if args is None else _args(args)[1],
            EMPTY_KWARGS if kwargs is None else _kwargs(kwargs)[1],
            None if job_id is None else get_job_id(req))


def _parse_plain(req: dict[str, Any]) -> SubmitSpec:
    handler = _handler(req)
    args = req.get("args")
    args, args_json = _NO_ARGS if args is None else _args(args)
    kwargs = req.get("kwargs")
    kwargs, kwargs_json = _NO_KWARGS if kwargs is None else _kwargs(kwargs)
    job_id = req.get("job_id")
    return SubmitSpec(None if job_id is None else get_job_id(req), handler, args, kwargs,
                      args_json, kwargs_json, None, None, None, None, None, EMPTY_DICT, None,
                      EMPTY_LIST, None, False, True)


def _parse_full(req: dict[str, Any], now: float) -> SubmitSpec:
    unknown = [k for k in req if k not in SUBMIT_FIELDS]
    if unknown:
        raise invalid(unknown[0], "unknown field")
    handler = _handler(req)
    args, args_json = _NO_ARGS if req.get("args") is None else _args(req["args"])
    kwargs, kwargs_json = _NO_KWARGS if req.get("kwargs") is None else _kwargs(req["kwargs"])
    prio = req.get("priority")
    return SubmitSpec(
        job_id=get_job_id(req, required=False),
        handler=handler,
        args=args,
        kwargs=kwargs,
        args_json=args_json,
        kwargs_json=kwargs_json,
        priority=None if prio is None else priority_value(prio),
        max_retries=get_int(req, "max_retries", None, 0, 1000),
        retry_delay=get_number(req, "retry_delay", None),
        retry_backoff=get_number(req, "retry_backoff", None, lo=1.0),
        timeout=get_number(req, "timeout", None, positive=True),
        tags=_tags(req),
        name=get_str(req, "name"),
        depends_on=_depends_on(req),
        run_at=_run_at(req, now),
        has_timeout="timeout" in req,
    )
