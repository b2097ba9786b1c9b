"""jobd-cli's entry point: the argument parser, socket resolution and exit statuses.

Parsing lives here and nowhere else; the commands (`commands`, `top`, ...) get
a `Context` and a parsed namespace, and raise JobdError for the daemon's
errors, which `main` maps to exit statuses (docs/cli.md). With `--json`
every error, a usage error too, is a JSON document on stdout
(`{"ok": false, "error": {"code", "message"}}`), so a script reads one stream.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from jobd import __version__
from jobd import constants as C
from jobd_client import Client, DaemonUnavailable, JobdError
from jobd_client import protocol as P

from . import alerts as alerting
from . import commands as cmd
from . import failures, flow, logs
from . import handlers as code
from . import schedules as sched
from .context import Context, error_document
from .top import cmd_top

# Bounds connecting and each reply; `result`/`wait` add the time the daemon may hold a reply.
REPLY_TIMEOUT_S = 30.0
EXIT_INTERRUPTED = 130  # shell convention for SIGINT
# Error codes of the CLI's own, for `--json` errors that are not the daemon's
# (those carry the protocol's codes, or the client's `daemon_unavailable`).
E_USAGE = "usage"
E_TIMEOUT = "timeout"

EPILOG = """\
The socket is --socket, else $JOBD_SOCKET, else the default path of `jobd serve`.
--json prints each reply as JSON (without `ok`/`id`; `status --json` prints the job view).
Exit status: 0 success, 1 the daemon answered an error (or `wait`/`watch ID` ended
other than completed, or `reload` did not reload), 2 usage error, 3 daemon unreachable.
With --json, errors are printed to stdout as {"ok": false, "error": {"code", "message"}}."""


class UsageError(Exception):
    """A usage error found by argparse; `main` prints it (as JSON with --json)."""

    def __init__(self, prog: str, usage: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.usage, self.message = prog, usage, message


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of printing and exiting,
    so `main` can answer in JSON when the command line asked for it."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, self.format_usage(), message)


# --- argument types ----------------------------------------------------------------------------

def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON the daemon can store


def json_arg(text: str) -> Any:
    """A submit ARG: its JSON value when it is valid JSON, else the string itself."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return text


def json_list(text: str) -> list[Any]:
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("must be a JSON array")
    return value


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


def priority(text: str) -> int | str:
    if text in C.PRIORITY_NAMES:
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not C.PRIORITY_MIN <= value <= C.PRIORITY_MAX:
        names = ", ".join(C.PRIORITY_NAMES)
        raise argparse.ArgumentTypeError(
            f"{text!r}: use {C.PRIORITY_MIN}..{C.PRIORITY_MAX} or one of {names}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def interval(text: str) -> float:
    value = seconds(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError("the refresh interval must be at least 0.1 s")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def event_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - C.EVENTS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown event(s) {', '.join(unknown) or '(none)'}; known: {', '.join(sorted(C.EVENTS))}")
    return names


# --- the parser -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # The global options are accepted after the command too (`status ID --json`);
    # SUPPRESS keeps a subcommand from resetting a value given before it.
    common = CliParser(add_help=False)
    common.add_argument("--socket", default=argparse.SUPPRESS, metavar="PATH",
                        help="the daemon's Unix socket")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable JSON output")
    parser = CliParser(
        prog="jobd-cli", description="Operate a jobd daemon over its socket.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", default=None, metavar="PATH", help="the daemon's Unix socket")
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")
    parser.add_argument("--version", action="version", version=f"jobd-cli {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    add("ping", cmd.cmd_ping, "check the daemon answers; show version and handler count")
    _submit_parser(add("submit", cmd.cmd_submit, "queue a job and print its id"))
    add("status", cmd.cmd_status, "show a job").add_argument("job_id", metavar="ID")
    p = add("result", cmd.cmd_result, "show a job's outcome")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--wait", type=seconds, metavar="S", help="wait up to S s for the job to end")
    p = add("wait", cmd.cmd_wait,
            "wait for jobs (one: with its progress); exit 0 only if all completed")
    p.add_argument("job_ids", nargs="+", metavar="ID")
    p.add_argument("--timeout", type=seconds, metavar="S", help="give up after S s (exit 1)")
    p = add("cancel", flow.one_or_all(cmd.cmd_cancel, flow.cmd_cancel_all),
            "cancel a job (a running one only with --force), or with --all the jobs matching filters")
    p.add_argument("--force", action="store_true", help="kill the worker running the job")
    _one_or_all(p, "cancel")
    _list_parser(add("list", cmd.cmd_list, "list jobs in submit order"))
    p = add("dead", cmd.cmd_dead, "list dead-lettered jobs")
    p.add_argument("--signature", metavar="S", help="only jobs of this failure group (see failures)")
    _page_options(p)
    _failures_parser(add("failures", failures.cmd_failures,
                         "failed or dead-lettered jobs grouped by what went wrong, largest first"))
    _one_or_all(add("retry", flow.one_or_all(cmd.cmd_retry, flow.cmd_retry_all),
                    "run a dead-lettered, failed or cancelled job again, or with --all the "
                    "jobs matching filters"), "retry")
    _replay_parser(add("replay", flow.cmd_replay,
                       "queue a new job copied from a finished one and print its id"))
    p = add("purge", cmd.cmd_purge, "delete finished jobs")
    p.add_argument("--status", choices=sorted(C.TERMINAL), help="only jobs with this status")
    p.add_argument("--older-than", type=seconds, metavar="S", help="only jobs finished over S s ago")
    add("metrics", cmd.cmd_metrics, "show metrics").add_argument(
        "--prometheus", action="store_true", help="the raw Prometheus exposition text")
    add("workers", cmd.cmd_workers, "list worker processes")
    p = add("scale", cmd.cmd_scale, "set the number of worker processes of a queue")
    p.add_argument("count", type=count, metavar="N")
    p.add_argument("--queue", metavar="Q", help="the queue whose pool to scale (default: default)")
    p = add("watch", cmd.cmd_watch,
            "print events as they happen (Ctrl-C stops; with an ID, the job's end does)")
    p.add_argument("job_id", nargs="?", metavar="ID",
                   help="only this job's events, until it ends (exit status as for wait)")
    p.add_argument("--events", type=event_names, metavar="A,B", help="only these event names")
    p = add("logs", logs.cmd_logs, "print what a job wrote (stdout, stderr, logging)")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new output until the job has ended")
    add("reload", code.cmd_reload,
        "load the handler code afresh (exit 1 when it did not load; the old code keeps serving)")
    handlers_parser = add("handlers", code.cmd_handlers,
                          "list registered handlers with their state and options (or pause, "
                          "resume, reset, release or quarantine one)")
    actions = _pause_parsers(handlers_parser, common, "handler")
    q = actions.add_parser("reset", parents=[common], help="close the handler's circuit breaker",
                           description="close the handler's circuit breaker")
    q.set_defaults(run=code.cmd_breaker_reset)
    q.add_argument("name", metavar="NAME")
    q = actions.add_parser("release", parents=[common],
                           help="lift the handler's quarantine (its breaker closes too)",
                           description="lift the handler's quarantine (its breaker closes too)")
    q.set_defaults(run=code.cmd_release)
    q.add_argument("name", metavar="NAME")
    q = actions.add_parser("quarantine", parents=[common],
                           help="hold every job of the handler until it is released",
                           description="hold every job of the handler until it is released")
    q.set_defaults(run=code.cmd_quarantine)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--reason", metavar="R", help="why (shown in the handlers view)")
    _pause_parsers(add("queues", flow.cmd_queues, "list queues (or pause/resume one)"),
                   common, "queue")
    p = add("top", cmd_top, "live dashboard (q or Ctrl-C quits)")
    p.add_argument("--interval", type=interval, default=1.0, metavar="S",
                   help="refresh every S s (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    _schedule_parsers(add("schedule", None, "manage cron schedules (add, list, remove)"), common)
    _alert_parsers(add("alerts", alerting.cmd_alerts, "list firing alerts (or send a test one)"),
                   common)
    return parser


def _alert_parsers(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`alerts` lists; `alerts test` sends the test alert (exit 1: no target configured)."""
    sub = p.add_subparsers(dest="action", metavar="[test]")
    help_ = "send a test alert to the configured command and webhook"
    sub.add_parser("test", parents=[common], help=help_,
                   description=help_).set_defaults(run=alerting.cmd_alert_test)


def _submit_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("handler", metavar="HANDLER")
    p.add_argument("args", nargs="*", type=json_arg, metavar="ARG",
                   help="positional arguments: JSON when valid JSON, else a string")
    p.add_argument("--kwargs", type=json_object, metavar="JSON", help="keyword arguments (object)")
    p.add_argument("--priority", type=priority, metavar="P", help="0..1000 or low/normal/high/critical")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--delay", type=seconds, metavar="S", help="run no sooner than S s from now")
    when.add_argument("--run-at", metavar="ISO", help="run no sooner than this UTC time")
    p.add_argument("--after", action="append", metavar="ID", help="run after this job completed")
    p.add_argument("--timeout", type=seconds, metavar="S", help="stop an attempt after S s")
    p.add_argument("--max-retries", type=count, metavar="N", help="retries after the first attempt")
    p.add_argument("--tag", action="append", type=key_value, metavar="K=V", help="a tag (repeatable)")
    p.add_argument("--name", metavar="N", help="a name for the job")
    p.add_argument("--job-id", metavar="ID", help="the job id (a resubmit returns the same job)")
    p.add_argument("--queue", metavar="Q", help="the queue (default: the handler's)")
    p.add_argument("--unique-key", metavar="KEY",
                   help="no new job while a job with this key has not ended")
    p.add_argument("--unique-for", type=seconds, metavar="S",
                   help="with --unique-key: the key is held at most S s after its submit")
    p.add_argument("--on-conflict", choices=P.ON_CONFLICT,
                   help="with --unique-key: when the key is held (default return)")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    p.add_argument("--wait-timeout", type=seconds, metavar="S", help="with --wait: give up after S s")


def _schedule_parsers(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def add(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, parents=[common], help=help, description=help)
        q.set_defaults(run=run)
        return q

    q = add("add", sched.cmd_schedule_add, "add a schedule, or replace the one with this name")
    q.add_argument("name", metavar="NAME")
    q.add_argument("cron", metavar="CRON", help='5 fields, or 6 with seconds first; quote it: "0 3 * * *"')
    q.add_argument("handler", metavar="HANDLER")
    q.add_argument("args", nargs="*", type=json_arg, metavar="ARG",
                   help="positional arguments: JSON when valid JSON, else a string")
    q.add_argument("--kwargs", type=json_object, metavar="JSON", help="keyword arguments (object)")
    q.add_argument("--timezone", default="UTC", metavar="TZ",
                   help="IANA zone the fields are read in (default UTC)")
    q.add_argument("--priority", type=priority, metavar="P", help="0..1000 or low/normal/high/critical")
    q.add_argument("--timeout", type=seconds, metavar="S", help="stop an attempt after S s")
    q.add_argument("--max-retries", type=count, metavar="N", help="retries after the first attempt")
    q.add_argument("--tag", action="append", type=key_value, metavar="K=V", help="a tag (repeatable)")
    add("list", sched.cmd_schedule_list, "list schedules with their next and last run")
    add("remove", sched.cmd_schedule_remove, "remove a schedule").add_argument("name", metavar="NAME")


def _pause_parsers(p: argparse.ArgumentParser, common: argparse.ArgumentParser,
                   kind: str) -> Any:
    """`queues pause|resume NAME` or `handlers pause|resume NAME`; without an action, the list.
    Returns the subparsers (handlers adds more actions)."""
    sub = p.add_subparsers(dest="action", metavar="[pause|resume|... NAME]")
    q = sub.add_parser("pause", parents=[common], help=f"hold the {kind}'s jobs (running ones finish)",
                       description=f"hold the {kind}'s jobs (running ones finish)")
    q.set_defaults(run=flow.cmd_pause, kind=kind)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--for", dest="for_s", type=seconds, metavar="S", help="resume by itself after S s")
    q.add_argument("--reason", metavar="R", help="why (shown in the queue and job views)")
    q = sub.add_parser("resume", parents=[common], help=f"let the {kind}'s jobs start again",
                       description=f"let the {kind}'s jobs start again")
    q.set_defaults(run=flow.cmd_resume, kind=kind)
    q.add_argument("name", metavar="NAME")
    return sub


def _one_or_all(p: argparse.ArgumentParser, verb: str) -> None:
    """`cancel ID` / `cancel --all [filters] [--yes]` (and the same for retry)."""
    p.add_argument("job_id", nargs="?", metavar="ID", help=f"the job to {verb} (or --all)")
    p.add_argument("--all", action="store_true",
                   help=f"{verb} every job matching the filters (all jobs without one)")
    p.add_argument("--status", action="append", choices=C.STATUSES, metavar="S",
                   help="only jobs with this status (repeatable: any of them)")
    p.add_argument("--queue", metavar="Q", help="only jobs of this queue")
    p.add_argument("--handler", metavar="H", help="only jobs of this handler")
    p.add_argument("--tag", metavar="K=V", type=lambda t: "=".join(key_value(t)),
                   help="only jobs with this tag")
    p.add_argument("--created-before", metavar="ISO", help="only jobs submitted before this UTC time")
    p.add_argument("--created-after", metavar="ISO", help="only jobs submitted after this UTC time")
    p.add_argument("--error-match", metavar="TEXT", help="only jobs whose error contains TEXT")
    p.add_argument("--signature", metavar="S", help="only jobs of this failure group (see failures)")
    p.add_argument("--yes", action="store_true",
                   help=f"{verb} them (without it: a dry run that shows what matches)")
    p.set_defaults(check=_one_or_all_check(p))


def _one_or_all_check(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], None]:
    """After parsing: exactly one of ID and --all; filters and --yes only with --all."""
    def check(args: argparse.Namespace) -> None:
        if args.all and args.job_id is not None:
            p.error("give a job ID or --all, not both")
        if not args.all and args.job_id is None:
            p.error("give a job ID, or --all (with filters to choose the jobs)")
        given = [option for option, attr, _ in flow.FILTER_OPTIONS if getattr(args, attr) is not None]
        if not args.all and (given or args.yes):
            p.error(f"{(given or ['--yes'])[0]} goes with --all")
    return check


def _replay_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="ID", help="a job that has ended (any status)")
    p.add_argument("--args", type=json_list, metavar="JSON", help="positional arguments instead (array)")
    p.add_argument("--kwargs", type=json_object, metavar="JSON", help="keyword arguments instead (object)")
    p.add_argument("--priority", type=priority, metavar="P", help="0..1000 or low/normal/high/critical")
    p.add_argument("--queue", metavar="Q", help="another queue")
    p.add_argument("--delay", type=seconds, metavar="S", help="run no sooner than S s from now")


def _page_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=count, metavar="N", help="at most N jobs (default 100)")
    p.add_argument("--offset", type=count, metavar="N", help="skip the first N matches")


def _list_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status", choices=C.STATUSES, help="only jobs with this status")
    p.add_argument("--handler", metavar="H", help="only jobs of this handler")
    p.add_argument("--queue", metavar="Q", help="only jobs of this queue")
    p.add_argument("--tag", metavar="K=V", type=lambda t: "=".join(key_value(t)),
                   help="only jobs with this tag")
    p.add_argument("--signature", metavar="S", help="only jobs of this failure group (see failures)")
    _page_options(p)


def _failures_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status", choices=P.FAILURE_GROUP_STATUSES,
                   help="dead_letter (the default) or failed")
    p.add_argument("--queue", metavar="Q", help="only jobs of this queue")
    p.add_argument("--handler", metavar="H", help="only jobs of this handler")
    p.add_argument("--limit", type=count, metavar="N", help="at most N groups (default 100)")


# --- main -------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (docs/cli.md)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        check = getattr(args, "check", None)
        if check is not None:
            check(args)
    except UsageError as exc:
        return usage_error(exc, wants_json(argv))
    except SystemExit as exc:  # --help or --version, already printed
        return exc.code if isinstance(exc.code, int) else C.CLI_USAGE
    ctx = Context(Client(socket_path=args.socket, timeout=REPLY_TIMEOUT_S), args.json)
    try:
        return int(args.run(ctx, args))
    except DaemonUnavailable as exc:
        return ctx.fail(exc.code, exc.message, C.CLI_UNREACHABLE)
    except JobdError as exc:
        return ctx.fail(exc.code, exc.message, C.CLI_OP_ERROR, f"error: {exc.code}: {exc.message}")
    except TimeoutError:
        message = f"jobd at {ctx.socket_path} did not answer within {REPLY_TIMEOUT_S:g}s"
        return ctx.fail(E_TIMEOUT, message, C.CLI_UNREACHABLE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()  # the reader went away (`| head`); nothing left to say
        return C.CLI_OP_ERROR
    finally:
        ctx.client.close()


def wants_json(argv: Sequence[str]) -> bool:
    """`--json` anywhere before a `--`: read before parsing, since parsing is what failed."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def usage_error(exc: UsageError, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(error_document(E_USAGE, exc.message) + "\n")
    else:
        sys.stderr.write(f"{exc.usage}{exc.prog}: error: {exc.message}\n")
    return C.CLI_USAGE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
