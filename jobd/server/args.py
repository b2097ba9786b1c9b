"""Argument checking for ops: every bad field is an `invalid_argument` naming it.

Nothing here touches state; `parse_submit` turns a submit request into a
`SubmitSpec` that `Jobs` then admits (or rejects) as a whole. The rules for
single values (numbers, priorities, JSON a job may hold) are
jobd/core/values.py, shared with config and `@handler` options.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

from jobd import constants as C
from jobd.core.filters import Filter
from jobd.core.job import (
    EMPTY_ARGS,
    EMPTY_DICT,
    EMPTY_KWARGS,
    EMPTY_LIST,
    PlainSubmit,
    SubmitSpec,
    parse_iso,
)
from jobd.core.values import (
    MAX_NAME,
    MAX_TAGS,
    compact_json,
    get_bool,
    get_int,
    get_number,
    get_str,
    in_range,
    priority_value,
    queue_name,
)
from jobd.errors import invalid

JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}\Z")   # \Z: no trailing newline


def get_job_id(req: dict[str, Any], field: str = "job_id", required: bool = True) -> Any:
    v = req.get(field)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not JOB_ID_RE.match(v):
        raise invalid(field, "must be a job id string (1-128 of A-Z a-z 0-9 . _ : @ / + -)")
    return v


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
    "delay", "run_at", "job_id", "queue", "unique_key", "unique_for", "on_conflict",
})
ON_CONFLICT = C.ON_CONFLICT


def _run_at(req: dict[str, Any], now: float) -> float | None:
    delay, run_at = req.get("delay"), req.get("run_at")
    if delay is not None and run_at is not None:
        raise invalid("delay", "give either delay or run_at, not both")
    if delay is not None:
        return in_range("delay", now + get_number(req, "delay", 0.0))
    if run_at is None:
        return None
    if not isinstance(run_at, str):
        raise invalid("run_at", "must be an ISO 8601 timestamp string")
    try:
        ts = parse_iso(run_at)
    except (ValueError, OverflowError):
        raise invalid("run_at", f"not an ISO 8601 timestamp: {run_at!r}") from None
    return in_range("run_at", ts)


def parse_submit(req: Any, now: float) -> SubmitSpec:
    """Check every field of a submit request (docs/protocol.md)."""
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


def parse_plain(req: dict[str, Any]) -> PlainSubmit:
    """(handler, args, args JSON, kwargs, kwargs JSON, job_id) of a plain
    submit, checked. The submit hot path: absent fields cost one lookup each."""
    handler = _handler(req)
    args = req.get("args")
    kwargs = req.get("kwargs")
    job_id = req.get("job_id")
    return (handler, *(_NO_ARGS if args is None else _args(args)),
            *(_NO_KWARGS if kwargs is None else _kwargs(kwargs)),
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
                      EMPTY_LIST, None, False, None, None, None, "return", True)   # plain


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
        queue=None if req.get("queue") is None else queue_name("queue", req["queue"]),
        unique_key=get_str(req, "unique_key", limit=256),
        unique_for=get_number(req, "unique_for", None, positive=True),
        on_conflict=_on_conflict(req),
    )


def _on_conflict(req: dict[str, Any]) -> str:
    v = req.get("on_conflict", "return")
    if v not in ON_CONFLICT:
        raise invalid("on_conflict", f"must be one of {', '.join(ON_CONFLICT)}, got {v!r}")
    if "on_conflict" in req and req.get("unique_key") is None:
        raise invalid("on_conflict", "only applies with a unique_key")
    return str(v)


# --- bulk filters (docs/flow-control.md, "Bulk operations") ------------------------------------
FILTER_FIELDS = ("status", "queue", "handler", "tag", "created_before", "created_after",
                 "error_match", "ids", "signature")
MAX_FILTER_IDS = 100_000
SIGNATURE_RE = re.compile(r"[0-9a-f]{16}\Z")


def parse_filter(req: dict[str, Any], purge: bool = False) -> Filter | None:
    """The filter of `cancel_many`, `retry_many` or `purge`, checked; None
    when no field is given (only `all: true` may say so; a purge without
    one keeps its old meaning: every finished job)."""
    flt = _filter(req, C.TERMINAL if purge else C.STATUSES)
    if purge:
        older = get_number(req, "older_than", None)
        if older is not None:
            flt = dataclasses.replace(flt, completed_before=time.time() - older)
    every = get_bool(req, "all", False)
    if flt == Filter():
        if purge:
            return Filter(statuses=frozenset(C.TERMINAL))
        if not every:
            raise invalid("all", "give at least one filter field (" + ", ".join(FILTER_FIELDS)
                          + "), or all: true to mean every job")
        return None
    if purge and flt.statuses is None:
        return dataclasses.replace(flt, statuses=frozenset(C.TERMINAL))
    return flt


def parse_list_filter(req: dict[str, Any]) -> Filter:
    """The filter of `list` and `dead_letters`: the bulk filter's fields, none
    required. Its `queue` is any string, as `list` always took it (a name no
    queue has matches nothing)."""
    return _filter(req, C.STATUSES, any_queue=True)


def _filter(req: dict[str, Any], statuses: frozenset[str] | tuple[str, ...],
            any_queue: bool = False) -> Filter:
    queue = req.get("queue")
    if queue is not None:
        queue = get_str(req, "queue") if any_queue else queue_name("queue", queue)
    tag = get_str(req, "tag", limit=2048)
    if tag is not None and "=" not in tag:
        raise invalid("tag", "must look like key=value")
    return Filter(
        statuses=_statuses(req, statuses),
        queue=queue,
        handler=get_str(req, "handler", limit=1024),
        tag=(tag.partition("=")[0], tag.partition("=")[2]) if tag is not None else None,
        created_before=_time(req, "created_before"),
        created_after=_time(req, "created_after"),
        error_match=get_str(req, "error_match", limit=4096),
        ids=_ids(req),
        signature=get_signature(req),
    )


def _ids(req: dict[str, Any]) -> tuple[str, ...] | None:
    ids = req.get("ids")
    if ids is None:
        return None
    if not isinstance(ids, list) or len(ids) > MAX_FILTER_IDS:
        raise invalid("ids", f"must be a list of at most {MAX_FILTER_IDS} job ids")
    for i, v in enumerate(ids):
        if not isinstance(v, str) or not JOB_ID_RE.match(v):
            raise invalid(f"ids[{i}]", "must be a job id string")
    return tuple(ids)


def get_signature(req: dict[str, Any]) -> str | None:
    v = req.get("signature")
    if v is None:
        return None
    if not isinstance(v, str) or not SIGNATURE_RE.match(v):
        raise invalid("signature", f"must be a failure group's signature (16 hex digits), got {v!r}")
    return v


# --- failure groups (docs/protocol.md, "failure_groups") -----------------------------------------
FAILURE_GROUPS_FIELDS = frozenset({"op", "id", "status", "queue", "handler", "limit"})
MAX_GROUPS = 10_000


def parse_failure_groups(req: dict[str, Any]) -> tuple[str, str | None, str | None, int]:
    """(status, queue, handler, limit) of a `failure_groups` request. A field
    it does not know is refused: a misspelt `handler` would show every group."""
    for name in req:
        if name not in FAILURE_GROUPS_FIELDS:
            raise invalid(name, "unknown field (status, queue, handler, limit)")
    status = get_status(req, allowed=C.FAILURE_GROUP_STATUSES) or C.FAILURE_GROUP_STATUSES[0]
    queue = None if req.get("queue") is None else queue_name("queue", req["queue"])
    handler = get_str(req, "handler", limit=1024)
    return status, queue, handler, get_int(req, "limit", 100, 1, MAX_GROUPS)


def _statuses(req: dict[str, Any], allowed: frozenset[str] | tuple[str, ...]
              ) -> frozenset[str] | None:
    v = req.get("status")
    if v is None:
        return None
    values = v if isinstance(v, list) else [v]
    if not values or any(not isinstance(s, str) or s not in allowed for s in values):
        raise invalid("status", f"must be one of {', '.join(sorted(allowed))} or a list of "
                                f"them, got {v!r}")
    return frozenset(values)


def _time(req: dict[str, Any], field: str) -> float | None:
    v = req.get(field)
    if v is None:
        return None
    if not isinstance(v, str):
        raise invalid(field, f"must be an ISO 8601 time string, got {v!r}")
    try:
        return parse_iso(v)
    except ValueError:
        raise invalid(field, f"must be an ISO 8601 time string, got {v!r}") from None


def parse_replay(req: dict[str, Any], now: float) -> dict[str, Any]:
    """What a `replay` changes of the job it copies: args, kwargs, priority, queue, delay."""
    out: dict[str, Any] = {}
    if req.get("args") is not None:
        out["args"], out["args_json"] = _args(req["args"])
    if req.get("kwargs") is not None:
        out["kwargs"], out["kwargs_json"] = _kwargs(req["kwargs"])
    if req.get("priority") is not None:
        out["priority"] = priority_value(req["priority"])
    if req.get("queue") is not None:
        out["queue"] = queue_name("queue", req["queue"])
    if req.get("delay") is not None:
        out["run_at"] = in_range("delay", now + get_number(req, "delay", 0.0))
    return out
