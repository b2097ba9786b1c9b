"""One function per jobd-cli command (docs/cli.md): call the daemon, then print.

Every command returns its exit status. With `--json` a command prints the
op's reply without its envelope (`ok`, `id`); `status --json` prints the job
view itself. Errors answered by the daemon propagate as JobdError and are
turned into exit statuses by `app.main`.
"""
from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from jobd import constants as C
from jobd_client import Event
from jobd_client import protocol as P

from .context import Context
from .progress import BarDisplay, Display, LineDisplay, NullDisplay, follow
from .tables import (
    Column,
    byte_size,
    clip,
    clock_time,
    compact_json,
    duration,
    ellipsis,
    first_line,
    fitting_json,
    key_values,
    megabytes,
    progress_text,
    rate,
    short_time,
    table,
)
from .waiting import Outcome, Waiter, watch_until_end

# Event data keys every event has; the line shows them in their own columns.
_EVENT_COMMON = ("job_id", "timestamp")
_ERROR_KEYS = ("error", "final_error")


# --- ping / submit / wait ------------------------------------------------------------------

def cmd_ping(ctx: Context, args: argparse.Namespace) -> int:
    start = time.perf_counter()
    hello = ctx.client.hello()
    rtt_ms = (time.perf_counter() - start) * 1000
    if ctx.json:
        ctx.emit(hello)
        return C.CLI_OK
    handlers = hello.get("handlers") or []
    ctx.say(f"jobd {hello.get('version')} at {ctx.socket_path}: protocol {hello.get('protocol')}, "
            f"{len(handlers)} handler(s), {rtt_ms:.1f} ms")
    return C.CLI_OK


def submit_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The submit request; the job id is made here so a resend cannot duplicate the job."""
    return dict(handler=args.handler, args=args.args, kwargs=args.kwargs,
                priority=args.priority, delay=args.delay, run_at=args.run_at,
                depends_on=args.after or None, timeout=args.timeout,
                max_retries=args.max_retries, tags=dict(args.tag) if args.tag else None,
                name=args.name, job_id=args.job_id or uuid.uuid4().hex, queue=args.queue,
                unique_key=args.unique_key, unique_for=args.unique_for,
                on_conflict=args.on_conflict)


def cmd_submit(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_SUBMIT, **submit_fields(args))
    if body.get("duplicate"):       # stdout still has the id, the holder's: scripts go on with it
        ctx.note(f"no new job: {body.get('job_id')} ({body.get('status')}) holds unique key "
                 f"{args.unique_key!r}")
    if not args.wait:
        ctx.emit(body) if ctx.json else ctx.say(str(body.get("job_id")))
        return C.CLI_OK
    if not ctx.json:  # the id first, so a user can come back to a long job
        ctx.say(str(body.get("job_id")))
        ctx.out.flush()
    return wait_for(ctx, str(body.get("job_id")), args.wait_timeout)


def cmd_wait(ctx: Context, args: argparse.Namespace) -> int:
    job_ids = list(dict.fromkeys(args.job_ids))
    if len(job_ids) == 1:
        return wait_for(ctx, job_ids[0], args.timeout)
    return wait_all(ctx, job_ids, args.timeout)


def wait_for(ctx: Context, job_id: str, timeout: float | None) -> int:
    """Follow the job, print its outcome; 0 only when it completed."""
    outcome = follow(ctx.client, job_id, timeout, _display(ctx))
    status = outcome.get("status")
    if ctx.json:
        ctx.emit(outcome)
    elif status == C.COMPLETED:
        ctx.say(fitting_json(outcome.get("result"), ctx.width))
    if status in C.TERMINAL and status != C.COMPLETED:
        ctx.note(f"job {job_id} {status}: {first_line(outcome.get('error'))}")
    elif status not in C.TERMINAL:
        waited = f" after {timeout:g}s" if timeout is not None else ""
        ctx.note(f"error: timeout: job {job_id} is still {status}{waited}")
    return C.CLI_OK if status == C.COMPLETED else C.CLI_OP_ERROR


def wait_all(ctx: Context, job_ids: list[str], timeout: float | None) -> int:
    """Wait for every job; a line per job as it ends (in the order they end),
    then the ones that had not ended. 0 only when all completed."""
    def report(job_id: str, outcome: Outcome) -> None:
        ctx.say(end_line(job_id, outcome, ctx.width if ctx.tty else 0))
        ctx.out.flush()
    outcomes = Waiter(ctx.client, job_ids, None if ctx.json else report).run(timeout)
    in_order = [outcomes[job_id] for job_id in job_ids]
    running = [o for o in in_order if o.get("status") not in C.TERMINAL]
    if ctx.json:
        ctx.emit({"jobs": in_order})
    else:
        ctx.lines(end_line(str(o.get("job_id")), o, ctx.width if ctx.tty else 0) for o in running)
    unsuccessful = sum(o.get("status") != C.COMPLETED for o in in_order) - len(running)
    if unsuccessful:
        ctx.note(f"{unsuccessful} of {len(job_ids)} jobs did not complete")
    if running:
        waited = f" after {timeout:g}s" if timeout is not None else ""
        ctx.note(f"error: timeout: {len(running)} of {len(job_ids)} jobs had not ended{waited}")
    return C.CLI_OK if not unsuccessful and not running else C.CLI_OP_ERROR


def end_line(job_id: str, outcome: Outcome, width: int = 0) -> str:
    """`<id> completed  <result>` or `<id> failed     <error's first line>`."""
    status = str(outcome.get("status"))
    detail = (compact_json(outcome.get("result")) if status == C.COMPLETED
              else first_line(outcome.get("error")))
    line = f"{job_id} {status:<11} {detail}".rstrip()
    return clip(line, width) if width else line


def _display(ctx: Context) -> Display:
    if ctx.json:
        return NullDisplay()
    return BarDisplay(ctx.out, ctx.width) if ctx.tty else LineDisplay(ctx.out)


# --- one job -----------------------------------------------------------------------------------

def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    job = ctx.client.call(P.OP_STATUS, job_id=args.job_id).get("job") or {}
    if ctx.json:
        ctx.emit(job)
    else:
        ctx.lines(key_values(job_pairs(job)))
    return C.CLI_OK


def job_pairs(job: dict[str, Any]) -> list[tuple[str, Any]]:
    """The human job view, in the order an operator reads it."""
    retries = job.get("max_retries")
    attempts = f"{job.get('attempts')} of {retries + 1}" if isinstance(retries, int) else job.get("attempts")
    pairs: list[tuple[str, Any]] = [
        ("id", job.get("id")), ("name", job.get("name") or "-"), ("handler", job.get("handler")),
        ("status", job.get("status")), ("priority", job.get("priority")), ("attempts", attempts),
        ("args", compact_json(job.get("args", []))), ("kwargs", compact_json(job.get("kwargs", {}))),
        ("tags", _tags(job.get("tags"))), ("depends_on", " ".join(job.get("depends_on") or []) or "-"),
        ("created_at", job.get("created_at") or "-"), ("scheduled_for", job.get("scheduled_for") or "-"),
        ("started_at", job.get("started_at") or "-"), ("completed_at", job.get("completed_at") or "-"),
        ("worker", _dash(job.get("worker_id"))), ("timeout", _seconds(job.get("timeout"))),
        ("retry", f"delay {_seconds(job.get('retry_delay'))}, backoff x{job.get('retry_backoff')}"),
        ("progress", progress_text(job.get("progress"))), ("error", job.get("error") or "-"),
    ]
    return _with_flow(pairs, job)


# Flow-control fields, shown when the daemon sends them (an older one does not),
# each after the field it belongs with.
_FLOW_FIELDS = (("queue", "handler"), ("held", "status"), ("unique_key", "name"),
                ("replay_of", "depends_on"))


def _with_flow(pairs: list[tuple[str, Any]], job: dict[str, Any]) -> list[tuple[str, Any]]:
    for key, after in _FLOW_FIELDS:
        if key in job:
            at = next(i for i, (name, _) in enumerate(pairs) if name == after) + 1
            value = held_text(job[key]) if key == "held" else _dash(job[key])
            pairs.insert(at, (key, value))
    return pairs


def held_text(held: Any) -> str:
    """`queue_paused since 10:00:01 until 10:05:01`, or `-` when the job is not held."""
    if not isinstance(held, dict):
        return "-"
    text = f"{held.get('reason')} since {short_time(held.get('since'))}"
    return text + (f" until {short_time(held['until'])}" if held.get("until") else "")


def _tags(tags: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in tags.items()) if isinstance(tags, dict) and tags else "-"


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:g}s"


def cmd_result(ctx: Context, args: argparse.Namespace) -> int:
    res = ctx.client.result(args.job_id, wait=args.wait)
    if ctx.json:
        ctx.emit(res)
        return C.CLI_OK
    ctx.lines(key_values([
        ("job_id", res.get("job_id")), ("status", res.get("status")),
        ("attempts", res.get("attempts")), ("duration", duration(res.get("duration"))),
        ("completed_at", res.get("completed_at") or "-"),
        ("result", fitting_json(res.get("result"), ctx.width - 14)),
        ("error", res.get("error") or "-"),
    ]))
    return C.CLI_OK


def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_CANCEL, job_id=args.job_id, force=args.force)
    if ctx.json:
        ctx.emit(body)
    elif body.get("cancelled"):
        ctx.say(f"cancelled {args.job_id}")
    elif body.get("status") == C.RUNNING:
        ctx.say(f"cancel requested: {args.job_id} is running and may stop early "
                "(--force kills its worker)")
    else:
        ctx.say(f"not cancelled: {args.job_id} is already {body.get('status')}")
    return C.CLI_OK


def cmd_retry(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_RETRY, job_id=args.job_id)
    ctx.emit(body) if ctx.json else ctx.say(f"{body.get('job_id')} is {body.get('status')} again")
    return C.CLI_OK


# --- many jobs -----------------------------------------------------------------------------------

def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_LIST, status=args.status, handler=args.handler, queue=args.queue,
                           tag=args.tag, signature=args.signature, limit=args.limit,
                           offset=args.offset)
    return _print_page(ctx, body, args.offset or 0, job_table)


def cmd_dead(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_DEAD_LETTERS, signature=args.signature, limit=args.limit,
                           offset=args.offset)
    return _print_page(ctx, body, args.offset or 0, dead_table)


def _print_page(ctx: Context, body: dict[str, Any], offset: int, render: Any) -> int:
    if ctx.json:
        ctx.emit(body)
        return C.CLI_OK
    jobs, total = body.get("jobs") or [], int(body.get("total") or 0)
    if jobs:
        ctx.lines(render(jobs, ctx.width, ellipsis(ctx.out)))
    ctx.say(_page_footer(len(jobs), total, offset))
    return C.CLI_OK


def _page_footer(shown: int, total: int, offset: int) -> str:
    if shown == total:
        return f"{total} job(s)" if total else "no jobs"
    if not shown:
        return f"no jobs at offset {offset} ({total} in all)"
    return f"jobs {offset + 1}-{offset + shown} of {total} (use --offset/--limit for more)"


JOB_COLUMNS = (Column("ID"), Column("STATUS"), Column("PRI", right=True), Column("ATT", right=True),
               Column("HANDLER", flex=True, dotted=True), Column("CREATED"))


def job_table(jobs: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    """Full ids always; the handler column gives way to fit `width`."""
    rows = [(j.get("id"), j.get("status"), j.get("priority"), j.get("attempts"),
             j.get("handler"), short_time(j.get("created_at"))) for j in jobs]
    return table(JOB_COLUMNS, rows, width, mark)


DEAD_COLUMNS = (Column("ID"), Column("ATT", right=True), Column("ENDED"),
                Column("HANDLER", flex=True, dotted=True), Column("ERROR", flex=True))


def dead_table(jobs: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    rows = [(j.get("id"), j.get("attempts"), short_time(j.get("completed_at")),
             j.get("handler"), first_line(j.get("error"))) for j in jobs]
    return table(DEAD_COLUMNS, rows, width, mark)


def cmd_purge(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_PURGE, status=args.status, older_than=args.older_than)
    ctx.emit(body) if ctx.json else ctx.say(f"purged {body.get('purged', 0)} job(s)")
    return C.CLI_OK


# --- operations -------------------------------------------------------------------------------------

def cmd_metrics(ctx: Context, args: argparse.Namespace) -> int:
    if args.prometheus:
        text = ctx.client.metrics("prometheus") or ""
        ctx.emit({"text": text}) if ctx.json else ctx.out.write(text if text.endswith("\n") else text + "\n")
        return C.CLI_OK
    body = ctx.client.call(P.OP_METRICS, format="json")
    ctx.emit(body) if ctx.json else ctx.lines(metrics_summary(body.get("metrics") or {}))
    return C.CLI_OK


def metrics_summary(m: dict[str, Any]) -> list[str]:
    queue, workers = m.get("queue") or {}, m.get("workers") or {}
    tput, wal = m.get("throughput") or {}, m.get("wal") or {}
    active = "  ".join(f"{s} {queue.get(s, 0)}" for s in C.STATUSES if s not in C.TERMINAL)
    done = "  ".join(f"{s} {queue.get(s, 0)}" for s in C.STATUSES if s in C.TERMINAL)
    by_prio = queue.get("by_priority") or {}
    prio = "  ".join(f"{p}: {n}" for p, n in sorted(by_prio.items(), key=lambda kv: -int(kv[0])))
    return key_values([
        ("queue", active), ("", done), ("pending by priority", prio or "-"),
        ("workers", "  ".join(f"{workers.get(k, 0)} {k}" for k in ("total", "idle", "busy", "healthy"))),
        ("throughput", "  ".join(f"{w} {rate(tput.get(w))}" for w in ("1m", "5m", "15m"))),
        ("wal", f"{byte_size(wal.get('bytes'))}, {wal.get('fsyncs', 0)} fsyncs"),
        ("uptime", duration(m.get("uptime_s"))),
    ])


def cmd_workers(ctx: Context, args: argparse.Namespace) -> int:
    workers = ctx.client.workers()
    if ctx.json:
        ctx.emit({"workers": workers})
    else:
        ctx.lines(worker_table(workers, ctx.width, ellipsis(ctx.out)))
        ctx.say(f"{len(workers)} worker(s)")
    return C.CLI_OK


WORKER_COLUMNS = (Column("ID", right=True), Column("PID", right=True), Column("STATUS"),
                  Column("JOB"), Column("DONE/FAIL", right=True),
                  Column("RSS MB", right=True), Column("HEALTHY"))


def worker_table(workers: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    rows = [(w.get("id"), w.get("pid"), w.get("status"), w.get("current_job") or "-",
             f"{w.get('jobs_completed', 0)}/{w.get('jobs_failed', 0)}",
             megabytes(w.get("rss_bytes")), "yes" if w.get("healthy") else "NO") for w in workers]
    return table(WORKER_COLUMNS, rows, width, mark)


def cmd_scale(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.scale(args.count, args.queue)
    where = f" of queue {args.queue}" if args.queue else ""
    ctx.emit(body) if ctx.json else ctx.say(f"workers{where}: {body.get('previous')} -> {body.get('target')}")
    return C.CLI_OK


# --- events ---------------------------------------------------------------------------------------------

def cmd_watch(ctx: Context, args: argparse.Namespace) -> int:
    if args.job_id:
        return watch_job(ctx, args.job_id, args.events)
    stream = ctx.client.watch(None, args.events)
    ctx.warn(f"watching all jobs on {ctx.socket_path} (Ctrl-C to stop)")
    try:
        for event in stream:
            _print_event(ctx, event)
    except KeyboardInterrupt:
        return C.CLI_OK
    finally:
        stream.close()
    return C.CLI_OK


def watch_job(ctx: Context, job_id: str, shown: list[str] | None) -> int:
    """One job's events until it ends; the exit status is `wait`'s. Every event is
    subscribed to (its end must be seen); `--events` only chooses what is printed."""
    def show(event: Event) -> None:
        if shown is None or event.event in shown:
            _print_event(ctx, event)
    def subscribed() -> None:
        ctx.warn(f"watching job {job_id} on {ctx.socket_path} until it ends (Ctrl-C to stop)")
    watch_until_end(ctx.client, job_id, show, subscribed)
    outcome = ctx.client.result(job_id)
    status = outcome.get("status")
    if status != C.COMPLETED:
        ctx.note(f"job {job_id} {status}: {first_line(outcome.get('error'))}")
    return C.CLI_OK if status == C.COMPLETED else C.CLI_OP_ERROR


def _print_event(ctx: Context, event: Event) -> None:
    raw = {"event": event.event, "data": event.data}
    ctx.say(compact_json(raw) if ctx.json else event_line(raw, ctx.width if ctx.tty else 0))
    ctx.out.flush()


def event_line(event: dict[str, Any], width: int = 0) -> str:
    """`12:00:01.123 job.started     <job id>  worker_id=1 attempt=1`, clipped to `width` (0: no limit)."""
    data = event.get("data") or {}
    line = (f"{clock_time(data.get('timestamp'))} {event.get('event', '?'):<15} "
            f"{data.get('job_id') or '-':<32} {event_summary(data)}").rstrip()
    return clip(line, width) if width else line


def event_summary(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key in _EVENT_COMMON:
            continue
        if key in _ERROR_KEYS:
            value = first_line(value)
        parts.append(f"{key}={_short(value)}")
    return " ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str):
        return value if value and " " not in value else compact_json(value)
    return compact_json(value)
