"""`jobd-cli reload` and `jobd-cli handlers`: the handler code the daemon runs.

`reload` asks the daemon to import the handler modules afresh in a new fork
server (docs/operations.md, "Deploying new handler code"); when that fails
the old code keeps serving and the reply's `error` says why, which this
command prints and turns into exit status 1. `handlers` lists the
registered handlers, each with its queue, state, counts (held ones too), a
line saying why when it is paused, and its options as the daemon merged them
(`@handler` and `[handler."NAME"]`, docs/handlers.md).
"""
from __future__ import annotations

import argparse
import textwrap
from typing import Any

from jobd import constants as C
from jobd_client.protocol import (
    OP_BREAKER_RESET,
    OP_HANDLERS,
    OP_QUARANTINE,
    OP_RELEASE,
    OP_RELOAD,
)

from .context import Context
from .flow import pause_text
from .tables import Column, clip, ellipsis, table

# The documented order of the options (docs/handlers.md); others follow by name.
OPTION_ORDER = ("priority", "max_retries", "retry_delay", "retry_backoff", "max_delay", "jitter",
                "timeout", "max_concurrency", "no_retry_for")
OPTIONS_INDENT = "    "


# --- reload ---------------------------------------------------------------------------------

def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(OP_RELOAD)
    reloaded = body.get("reloaded") is True
    if ctx.json:
        ctx.emit(body)
    elif reloaded:
        ctx.lines(reload_lines(body))
    else:
        ctx.warn(f"not reloaded: {body.get('error') or 'no reason given'}")
        ctx.warn("the code loaded before keeps serving; nothing was changed")
    return C.CLI_OK if reloaded else C.CLI_OP_ERROR


def reload_lines(body: dict[str, Any]) -> list[str]:
    """`reloaded: 1 handler added, 1 removed`, then `+ name` / `- name` lines."""
    added, removed = _names(body.get("handlers_added")), _names(body.get("handlers_removed"))
    if not added and not removed:
        return ["reloaded: the new code registers the same handlers"]
    lines = [f"reloaded: {len(added)} handler(s) added, {len(removed)} removed"]
    lines += [f"+ {name}" for name in added] + [f"- {name}" for name in removed]
    if removed:
        lines.append("jobs of removed handlers are held (not failed) until the handler returns")
    return lines


def _names(value: Any) -> list[str]:
    return sorted(str(name) for name in value) if isinstance(value, list) else []


# --- handlers -------------------------------------------------------------------------------

def cmd_handlers(ctx: Context, args: argparse.Namespace) -> int:
    handlers = ctx.client.call(OP_HANDLERS).get("handlers") or []
    if ctx.json:
        ctx.emit({"handlers": handlers})
        return C.CLI_OK
    if handlers:
        ctx.lines(handler_lines(handlers, ctx.width, ellipsis(ctx.out)))
    ctx.say(f"{len(handlers)} handler(s)" if handlers else "no handlers")
    return C.CLI_OK


HANDLER_COLUMNS = (Column("NAME", flex=True, dotted=True), Column("QUEUE"), Column("STATE"),
                   Column("PENDING", right=True), Column("RUNNING", right=True))
HELD_COLUMN = Column("HELD", right=True)
BREAKER_COLUMNS = (Column("FAILS", right=True), Column("RATE"), Column("NEXT TRIAL"))


def handler_lines(handlers: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    """A table row per handler, sorted by name, each followed by its pause
    (when paused) and its options (indented, wrapped to `width`: options are
    what an operator checks, so they are never cut). The HELD column is there
    when the daemon counts held jobs (an older one does not)."""
    ordered = sorted(handlers, key=lambda h: str(h.get("name")))
    held = any("held" in h for h in ordered)
    breakers = any(isinstance(h.get("breaker"), dict) for h in ordered)
    columns = (*HANDLER_COLUMNS, *((HELD_COLUMN,) if held else ()),
               *(BREAKER_COLUMNS if breakers else ()))
    rows = [(h.get("name"), h.get("queue") or "-", h.get("state") or "-", h.get("pending", 0),
             h.get("running", 0), *((h.get("held", 0),) if held else ()),
             *(_breaker_cells(h) if breakers else ())) for h in ordered]
    header, *lines = table(columns, rows, width, mark)
    out = [header]
    for line, handler in zip(lines, ordered, strict=True):
        out.append(line)
        if isinstance(handler.get("paused"), dict):
            out.append(clip(OPTIONS_INDENT + pause_text(handler["paused"]), width, mark))
        quarantine = handler.get("quarantine")
        if isinstance(quarantine, dict):
            out.append(clip(f"{OPTIONS_INDENT}quarantined since {quarantine.get('since')}: "
                            f"{quarantine.get('reason')} (jobd-cli handlers release "
                            f"{handler.get('name')})", width, mark))
        out += textwrap.wrap(options_text(handler.get("options") or {}), max(20, width),
                             initial_indent=OPTIONS_INDENT, subsequent_indent=OPTIONS_INDENT,
                             break_long_words=False, break_on_hyphens=False)
    return out


def options_text(options: dict[str, Any]) -> str:
    """`priority=20 max_retries=5 timeout=30 no_retry_for=ValueError,KeyError`; unset
    (null) options are left out."""
    known = [key for key in OPTION_ORDER if key in options]
    keys = known + sorted(set(options) - set(known))
    return " ".join(f"{key}={_value(options[key])}" for key in keys if options[key] is not None)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_value(v) for v in value)
    return str(value)


def _breaker_cells(handler: dict[str, Any]) -> tuple[Any, ...]:
    """FAILS (failed attempts in a row), RATE (its rate limit), NEXT TRIAL (an open breaker's)."""
    b: dict[str, Any] = handler.get("breaker") or {}
    trial = b.get("next_trial_at")
    return (b.get("failures", 0), handler.get("rate") or "-",
            str(trial)[11:19] if isinstance(trial, str) else "-")


# --- breaker reset, quarantine, release --------------------------------------------------------

def cmd_breaker_reset(ctx: Context, args: argparse.Namespace) -> int:
    return _act(ctx, ctx.client.call(OP_BREAKER_RESET, handler=args.name), "reset",
                f"breaker of {args.name} closed", f"breaker of {args.name} was closed already")


def cmd_release(ctx: Context, args: argparse.Namespace) -> int:
    return _act(ctx, ctx.client.call(OP_RELEASE, handler=args.name), "released",
                f"released {args.name}: its jobs may run again", f"{args.name} was not quarantined")


def _act(ctx: Context, body: dict[str, Any], key: str, done: str, not_needed: str) -> int:
    """The reply of an operator action: as JSON, or the line for whether it acted (`body[key]`)."""
    if ctx.json:
        ctx.emit(body)
    else:
        ctx.say(done if body.get(key) else not_needed)
    return C.CLI_OK


def cmd_quarantine(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(OP_QUARANTINE, handler=args.name, reason=args.reason)
    if ctx.json:
        ctx.emit(body)
    else:
        q = body.get("quarantine") or {}
        ctx.say(f"quarantined {args.name}: {q.get('reason')}; release it with "
                f"`jobd-cli handlers release {args.name}`")
    return C.CLI_OK
