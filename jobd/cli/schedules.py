"""`jobd-cli schedule add|list|remove`: cron schedules (docs/schedules.md).

Like every command: call the daemon, print, return the exit status; `--json`
prints the op's reply without its envelope.
"""
from __future__ import annotations

import argparse
from typing import Any

from jobd import constants as C

from .context import Context
from .cronwords import describe
from .tables import Column, ellipsis, short_time, table


def cmd_schedule_add(ctx: Context, args: argparse.Namespace) -> int:
    options = {k: v for k, v in (("priority", args.priority), ("timeout", args.timeout),
                                 ("max_retries", args.max_retries),
                                 ("tags", dict(args.tag) if args.tag else None)) if v is not None}
    schedule = ctx.client.schedule_add(args.name, args.cron, args.handler, args.args or None,
                                       args.kwargs, args.timezone, **options)
    ctx.emit({"schedule": schedule}) if ctx.json else ctx.say(added_line(schedule))
    return C.CLI_OK


def added_line(schedule: dict[str, Any]) -> str:
    """The expression in words first: a six-field typo ("0 3 * * * *" read as
    "at minute 3 of every hour") shows before it fires at the wrong times."""
    cron = str(schedule.get("cron"))
    return (f"schedule {schedule.get('name')}: {describe(cron)} ({cron}, "
            f"{schedule.get('timezone')}); next run {schedule.get('next_run') or 'never'}")


def cmd_schedule_list(ctx: Context, args: argparse.Namespace) -> int:
    schedules = ctx.client.schedule_list()
    if ctx.json:
        ctx.emit({"schedules": schedules})
        return C.CLI_OK
    if schedules:
        ctx.lines(schedule_table(schedules, ctx.width, ellipsis(ctx.out)))
    ctx.say(f"{len(schedules)} schedule(s)" if schedules else "no schedules")
    return C.CLI_OK


SCHEDULE_COLUMNS = (Column("NAME"), Column("CRON"), Column("TZ"),
                    Column("HANDLER", flex=True, dotted=True), Column("NEXT RUN"),
                    Column("LAST RUN"), Column("LAST JOB"))


def schedule_table(schedules: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    """Names, expressions and job ids in full; the handler gives way to fit `width`."""
    rows = [(s.get("name"), s.get("cron"), s.get("timezone"), s.get("handler"),
             short_time(s.get("next_run")), short_time(s.get("last_run")),
             s.get("last_job_id") or "-") for s in schedules]
    return table(SCHEDULE_COLUMNS, rows, width, mark)


def cmd_schedule_remove(ctx: Context, args: argparse.Namespace) -> int:
    removed = ctx.client.schedule_remove(args.name)
    if ctx.json:
        ctx.emit({"removed": removed})
    elif removed:
        ctx.say(f"removed schedule {args.name}")
    else:
        ctx.say(f"not removed: no schedule named {args.name}")
    return C.CLI_OK
