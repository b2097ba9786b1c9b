"""Flow control from jobd-cli: queues, pauses, bulk cancel/retry, replay (docs/cli.md).

`queues` and `handlers` show what is held back and why; `queues|handlers
pause|resume NAME` change it. `cancel --all` and `retry --all` select jobs by
filters and are dry runs until `--yes`: the daemon counts the matches and
sends a sample of ids, and nothing changes. A pause is a property of a queue
or a handler, never of each job, so these commands cost the same whatever
the queue holds.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from jobd import constants as C
from jobd_client import protocol as P

from .context import Context
from .tables import Column, clip, ellipsis, short_time, table

Command = Callable[[Context, argparse.Namespace], int]
DETAIL_INDENT = "    "
# Counted per queue besides `held`, in the order a job passes through them.
QUEUE_COUNTS = ((C.PENDING, "PENDING"), ("held", "HELD"), (C.RUNNING, "RUNNING"),
                (C.SCHEDULED, "SCHED"), (C.WAITING, "WAIT"), (C.RETRYING, "RETRY"))
# The filter options of `cancel --all` / `retry --all`: (option, namespace attribute, wire field).
FILTER_OPTIONS = (("--status", "status", "status"), ("--queue", "queue", "queue"),
                  ("--handler", "handler", "handler"), ("--tag", "tag", "tag"),
                  ("--created-before", "created_before", "created_before"),
                  ("--created-after", "created_after", "created_after"),
                  ("--error-match", "error_match", "error_match"),
                  ("--signature", "signature", "signature"))
SAMPLE_NOTE = "dry run: nothing was changed; re-run with --yes to {verb} them"


# --- queues ------------------------------------------------------------------------------------

def cmd_queues(ctx: Context, args: argparse.Namespace) -> int:
    queues = ctx.client.call(P.OP_QUEUES).get("queues") or []
    if ctx.json:
        ctx.emit({"queues": queues})
        return C.CLI_OK
    if queues:
        ctx.lines(queue_lines(queues, ctx.width, ellipsis(ctx.out)))
    ctx.say(f"{len(queues)} queue(s)" if queues else "no queues")
    return C.CLI_OK


QUEUE_COLUMNS = (Column("NAME", flex=True), Column("WORKERS", right=True), Column("PAUSED"),
                 Column("RATE"), Column("MAX", right=True),
                 *(Column(title, right=True) for _, title in QUEUE_COUNTS))


def queue_lines(queues: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    """A row per queue; a paused one is followed by a line saying since when,
    until when, by whom and why."""
    rows = [(q.get("name"), _dash(q.get("workers")), "yes" if q.get("paused") else "no",
             q.get("rate") or "-", q.get("max_size") or "-",
             *(queue_count(q, key) for key, _ in QUEUE_COUNTS)) for q in queues]
    header, *lines = table(QUEUE_COLUMNS, rows, width, mark)
    out = [header]
    for line, queue in zip(lines, queues, strict=True):
        out.append(line)
        if isinstance(queue.get("paused"), dict):
            out.append(clip(DETAIL_INDENT + pause_text(queue["paused"]), width, mark))
    return out


def queue_count(queue: dict[str, Any], key: str) -> int:
    """One count of a queue view: from `counts`, else from the view itself; 0 if absent."""
    counts = queue.get("counts")
    value = counts.get(key) if isinstance(counts, dict) and key in counts else queue.get(key)
    return value if isinstance(value, int) else 0


def pause_text(paused: dict[str, Any]) -> str:
    """`paused since 10:00:01 until 10:05:01 by uid 1000: deploy`."""
    until = paused.get("until")
    parts = [f"paused since {short_time(paused.get('since'))}",
             f"until {short_time(until)}" if until else "until resumed"]
    if paused.get("by_uid") is not None:
        parts.append(f"by uid {paused['by_uid']}")
    reason = paused.get("reason")
    return " ".join(parts) + (f": {reason}" if reason else "")


def _dash(value: Any) -> Any:
    return "-" if value is None else value


# --- pause / resume ------------------------------------------------------------------------------
# The parser sets `kind` ("queue" or "handler"): the op's field naming the target.

def cmd_pause(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_PAUSE, **{args.kind: args.name, "for": args.for_s},
                           reason=args.reason)
    if ctx.json:
        ctx.emit(body)
        return C.CLI_OK
    paused = body.get("paused") or {}
    until = paused.get("until")
    when = f"until {short_time(until)}" if until else "until resumed"
    reason = paused.get("reason")
    ctx.say(f"paused {args.kind} {args.name} {when}" + (f": {reason}" if reason else ""))
    return C.CLI_OK


def cmd_resume(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_RESUME, **{args.kind: args.name})
    if ctx.json:
        ctx.emit(body)
    elif body.get("resumed"):
        ctx.say(f"resumed {args.kind} {args.name}")
    else:
        ctx.say(f"{args.kind} {args.name} was not paused")
    return C.CLI_OK


# --- cancel --all / retry --all ----------------------------------------------------------------------

def one_or_all(one: Command, every: Command) -> Command:
    """The command for `cancel ID` or `cancel --all ...` (the parser checked it is one of them)."""
    def run(ctx: Context, args: argparse.Namespace) -> int:
        return every(ctx, args) if args.all else one(ctx, args)
    return run


def job_filter(args: argparse.Namespace) -> dict[str, Any]:
    """The filter fields given on the command line; `all: true` when there are none
    (the daemon refuses a filter with no field unless it is asked for all jobs)."""
    fields = {wire: getattr(args, attr) for _, attr, wire in FILTER_OPTIONS
              if getattr(args, attr) is not None}
    statuses = list(dict.fromkeys(fields.pop("status", [])))
    if statuses:
        fields["status"] = statuses[0] if len(statuses) == 1 else statuses
    return fields or {"all": True}


def cmd_cancel_all(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_CANCEL_MANY, **job_filter(args), force=args.force,
                           dry_run=not args.yes)
    if ctx.json:
        ctx.emit(body)
    elif not args.yes:
        ctx.lines(dry_run_lines(body, "cancel"))
    else:
        ctx.lines(cancelled_lines(body, args.force))
    return C.CLI_OK


def cmd_retry_all(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_RETRY_MANY, **job_filter(args), dry_run=not args.yes)
    if ctx.json:
        ctx.emit(body)
    elif not args.yes:
        ctx.lines(dry_run_lines(body, "retry"))
    else:
        ctx.say(f"retried {_int(body.get('retried'))} of {_int(body.get('matched'))} matching job(s)")
    return C.CLI_OK


def dry_run_lines(body: dict[str, Any], verb: str) -> list[str]:
    """`12 job(s) match, e.g.:`, the sample ids (full: they are copied), and how to go on."""
    matched = _int(body.get("matched"))
    if not matched:
        return [f"no job matches: nothing to {verb}"]
    sample = [str(job_id) for job_id in body.get("sample") or []]
    lines = [f"{matched} job(s) match" + (", e.g.:" if sample else "")]
    lines += [DETAIL_INDENT + job_id for job_id in sample]
    return [*lines, SAMPLE_NOTE.format(verb=verb)]


def cancelled_lines(body: dict[str, Any], force: bool) -> list[str]:
    cancelled, matched = _int(body.get("cancelled")), _int(body.get("matched"))
    lines = [f"cancelled {cancelled} of {matched} matching job(s)"]
    if cancelled < matched and not force:
        lines.append("running jobs only got a cancel request (--force kills their workers); "
                     "jobs that had ended stay as they were")
    return lines


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


# --- replay ---------------------------------------------------------------------------------------------

def cmd_replay(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_REPLAY, job_id=args.job_id, args=args.args, kwargs=args.kwargs,
                           priority=args.priority, queue=args.queue, delay=args.delay)
    ctx.emit(body) if ctx.json else ctx.say(str(body.get("job_id")))
    return C.CLI_OK
