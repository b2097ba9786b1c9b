"""A schedule's definition: checking `schedule_add` arguments and `[[schedule]]`
config entries, the record kept in the WAL (`SA`), and the view clients see.

Pure: no state, no clock. The submit options are checked by
`validate.parse_submit` itself, so a schedule accepts exactly what a submit
accepts. The running side (timer, firing) is `jobd.schedules`.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jobd import constants as C
from jobd.core.job import SubmitSpec, iso
from jobd.core.signature import check
from jobd.core.values import MAX_NAME
from jobd.errors import ConfigError, OpError, did_you_mean, invalid
from jobd.scheduling.cron import Cron, CronError, load_zone, parse
from jobd.server.args import parse_submit

# The submit options a schedule passes on to every job it submits.
OPTION_FIELDS = ("priority", "max_retries", "retry_delay", "retry_backoff", "timeout", "tags")
SCHEDULE_FIELDS = frozenset({"op", "id", "name", "cron", "handler", "args", "kwargs",
                             "timezone", *OPTION_FIELDS})
# What makes two schedules the same schedule (config reloads compare these).
DEFINITION_KEYS = ("name", "cron", "timezone", "handler", "args", "kwargs", "options", "source")
DEFAULT_TIMEZONE = "UTC"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A validated schedule, not yet recorded."""

    name: str
    cron: Cron
    handler: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]      # only the options given, normalised as a submit would

    def definition(self, source: str) -> dict[str, Any]:
        return {"name": self.name, "cron": self.cron.expr, "timezone": self.cron.timezone,
                "handler": self.handler, "args": self.args, "kwargs": self.kwargs,
                "options": self.options, "source": source}

    def record(self, source: str, now: float, previous: Mapping[str, Any] | None) -> dict[str, Any]:
        """The `SA` record body. An upsert keeps the run history (`last_run`,
        `last_due`, `last_job_id`); `updated_at` restarts the catch-up clock."""
        rec = self.definition(source)
        rec["updated_at"] = now
        rec["last_run"] = previous.get("last_run") if previous else None
        rec["last_due"] = last_due(previous) if previous else None
        rec["last_job_id"] = previous.get("last_job_id") if previous else None
        return rec


# --- checking ------------------------------------------------------------------------

def parse_schedule(req: Any, now: float) -> ScheduleSpec:
    """Check every field of a schedule_add request (or a config entry)."""
    if not isinstance(req, dict):
        raise invalid("schedule", "must be an object")
    unknown = [k for k in req if k not in SCHEDULE_FIELDS]
    if unknown:
        raise invalid(unknown[0], "unknown field")
    name = get_name(req)
    cron = _cron(req)
    submit = {k: req[k] for k in ("handler", "args", "kwargs", *OPTION_FIELDS) if k in req}
    spec = parse_submit({**submit, "name": name}, now)
    return ScheduleSpec(name, cron, spec.handler, spec.args, spec.kwargs, _options(spec))


def get_name(req: Mapping[str, Any]) -> str:
    name = req.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME \
            or not name.isprintable():
        raise invalid("name", f"required: a non-blank string of at most {MAX_NAME} "
                              "printable characters")
    return name


def _cron(req: Mapping[str, Any]) -> Cron:
    timezone = req.get("timezone")
    timezone = DEFAULT_TIMEZONE if timezone is None else timezone
    try:
        load_zone(timezone)
    except CronError as e:
        raise invalid("timezone", str(e)) from None
    try:
        return parse(req.get("cron"), timezone)  # type: ignore[arg-type]
    except CronError as e:
        raise invalid("cron", str(e)) from None


def _options(spec: SubmitSpec) -> dict[str, Any]:
    given = {"priority": spec.priority, "max_retries": spec.max_retries,
             "retry_delay": spec.retry_delay, "retry_backoff": spec.retry_backoff,
             "tags": spec.tags or None}
    out: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if spec.has_timeout:
        out["timeout"] = spec.timeout
    return out


def require_handler(spec: ScheduleSpec, handlers: Mapping[str, Any]) -> None:
    """The schedule's handler is registered and its args bind to its parameters."""
    if spec.handler not in handlers:
        raise OpError(C.E_UNKNOWN_HANDLER, f"no handler registered as {spec.handler!r}"
                                           + did_you_mean(spec.handler, list(handlers)))
    shape = getattr(handlers[spec.handler], "shape", None)
    wrong = check(shape, len(spec.args), spec.kwargs) if shape is not None else None
    if wrong is not None:
        raise invalid(*wrong)


def check_config(entries: list[dict[str, Any]],
                 handlers: Mapping[str, Any] | None = None) -> list[ScheduleSpec]:
    """Every `[[schedule]]` entry as a spec; a bad one is a ConfigError naming
    its key (`schedule[2].cron`). Handlers are checked when given (they are
    imported after the config is read)."""
    specs: list[ScheduleSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        _check_json(i, entry)
        try:
            spec = parse_schedule(entry, 0.0)
            if handlers is not None:
                require_handler(spec, handlers)
        except OpError as e:
            raise _config_error(i, entry, e) from None
        if spec.name in seen:
            raise ConfigError(f"config key 'schedule[{i}].name': duplicate schedule name "
                              f"{spec.name!r}")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def _config_error(index: int, entry: Any, e: OpError) -> ConfigError:
    if e.code == C.E_UNKNOWN_HANDLER:
        field, why = "handler", e.message
    else:
        field, _, why = e.message.partition(": ")
    return _key_error(index, entry, field, why)


def _key_error(index: int, entry: Any, field: str, why: str) -> ConfigError:
    name = entry.get("name") if isinstance(entry, dict) else None
    named = f" (schedule {name!r})" if isinstance(name, str) else ""
    return ConfigError(f"config key 'schedule[{index}].{field}'{named}: {why}")


def _check_json(index: int, entry: dict[str, Any]) -> None:
    """Refuse TOML values JSON has no type for. The WAL would give them back
    as something else (a date as a string, nan as null), so the entry would
    never again equal its record: every restart would rewrite it, and each
    rewrite restarts its catch-up clock."""
    for key, value in entry.items():
        found = _not_json(value, _toml_key(key))
        if found is not None:
            raise _key_error(index, entry, *found)


def _not_json(value: Any, key: str) -> tuple[str, str] | None:
    """(key, why) of the first value in `value` (itself included) that is not JSON."""
    why = _why_not_json(value)
    if why is not None:
        return key, why
    for sub, item in _children(value, key):
        found = _not_json(item, sub)
        if found is not None:
            return found
    return None


def _why_not_json(value: Any) -> str | None:
    if isinstance(value, (dt.date, dt.time)):        # a datetime is a date too
        text = value.isoformat()
        return f'a TOML date/time ({text}) is not a JSON value; write it as a string: "{text}"'
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a JSON value: numbers must be finite"
    return None


def _children(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """(key, value) of each item of a table or an array."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield f"{key}.{_toml_key(name)}", item
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield f"{key}[{i}]", item


def _toml_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted."""
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


# --- runs ----------------------------------------------------------------------------

def last_due(rec: Mapping[str, Any]) -> float | None:
    """The due time of the last run (the time its job id names). A record
    written before jobd kept it apart has only `last_run`, which then held
    the due time."""
    return rec["last_due"] if "last_due" in rec else rec.get("last_run")


def same_definition(rec: Mapping[str, Any], definition: Mapping[str, Any]) -> bool:
    return all(rec.get(k) == definition[k] for k in DEFINITION_KEYS)


def submit_request(rec: Mapping[str, Any], job_id: str) -> dict[str, Any]:
    """The submit a run makes: the job is named after its schedule."""
    return {"handler": rec["handler"], "args": rec["args"], "kwargs": rec["kwargs"],
            "name": rec["name"], "job_id": job_id, **rec["options"]}


def view(rec: Mapping[str, Any], next_run: float | None) -> dict[str, Any]:
    """What schedule_add and schedule_list answer (timestamps as in the job view)."""
    options = rec.get("options") or {}
    out = {"name": rec["name"], "cron": rec["cron"], "timezone": rec["timezone"],
           "handler": rec["handler"], "args": rec["args"], "kwargs": rec["kwargs"],
           "next_run": iso(next_run), "last_run": iso(rec.get("last_run")),
           "last_due": iso(last_due(rec)), "last_job_id": rec.get("last_job_id"),
           "source": rec.get("source"), "updated_at": iso(rec.get("updated_at")),
           # Exactly the options given: a flat field's null cannot tell "no
           # timeout" (`"timeout": null` here) from "the handler's" (absent).
           "options": dict(options)}
    for key in OPTION_FIELDS:
        out[key] = options.get(key, {} if key == "tags" else None)
    return out
