"""`jobd-cli logs ID [--follow]`: what a job printed and logged while it ran.

The daemon keeps each job's captured output (the last `[results]
log_max_bytes` of it) and answers the op `logs` {job_id, offset} with the
text from `offset`, the `offset` to continue from, `truncated` (output
before the text was dropped) and `complete` (the job has ended and all of
its output was read). `--follow` asks again from the returned offset until
`complete`, like `tail -f`: at once while output keeps coming, every
`FOLLOW_POLL_S` when there was nothing new.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from jobd import constants as C
from jobd_client.protocol import OP_LOGS

from .context import Context
from .tables import compact_json

# A person watching a job's output does not notice half a second; a loop with
# no pause would keep the daemon and a CPU busy for nothing.
FOLLOW_POLL_S = 0.5
DROPPED = "[jobd: earlier output of this job was dropped; only the last log_max_bytes are kept]"

Chunk = dict[str, Any]


def cmd_logs(ctx: Context, args: argparse.Namespace) -> int:
    if args.follow:
        follow_logs(ctx, args.job_id)
    else:
        print_logs(ctx, args.job_id)
    return C.CLI_OK


def read_logs(ctx: Context, job_id: str, offset: int) -> Chunk:
    return ctx.client.call(OP_LOGS, job_id=job_id, offset=offset)


def print_logs(ctx: Context, job_id: str) -> None:
    """Everything captured so far. A long output may come in parts, each
    saying where the next starts; one document with --json."""
    chunks: list[Chunk] = []
    offset = 0
    while True:
        chunk = read_logs(ctx, job_id, offset)
        chunks.append(chunk)
        after = int(chunk.get("offset") or 0)
        if not chunk.get("text") or chunk.get("complete") or after <= offset:
            break
        offset = after
    if ctx.json:
        ctx.emit(_joined(chunks))
        return
    for chunk in chunks:
        _write(ctx, chunk)
    _end_line(ctx, _text(_joined(chunks)))


def _joined(chunks: list[Chunk]) -> Chunk:
    return {"text": "".join(_text(c) for c in chunks), "offset": chunks[-1].get("offset"),
            "truncated": any(bool(c.get("truncated")) for c in chunks),
            "complete": bool(chunks[-1].get("complete"))}


def follow_logs(ctx: Context, job_id: str) -> None:
    """Print new output as it comes until the job has ended and all of it was read."""
    offset, last = 0, ""
    while True:
        chunk = read_logs(ctx, job_id, offset)
        if ctx.json and (chunk.get("text") or chunk.get("complete")):
            ctx.say(compact_json(chunk))
            ctx.out.flush()
        elif not ctx.json:
            _write(ctx, chunk)
        last = _text(chunk) or last
        if chunk.get("complete"):
            break
        if not chunk.get("text"):
            time.sleep(FOLLOW_POLL_S)
        offset = int(chunk.get("offset") or offset)
    if not ctx.json:
        _end_line(ctx, last)


def _text(chunk: Chunk) -> str:
    return str(chunk.get("text") or "")


def _write(ctx: Context, chunk: Chunk) -> None:
    if chunk.get("truncated"):
        ctx.out.flush()                  # the note goes between the right lines
        ctx.warn(DROPPED)
    if _text(chunk):
        ctx.out.write(_text(chunk))
        ctx.out.flush()


def _end_line(ctx: Context, last_text: str) -> None:
    """On a terminal, end an output whose last line had no newline, so the prompt
    does not join it; a pipe gets the bytes exactly as the job wrote them."""
    if ctx.tty and last_text and not last_text.endswith("\n"):
        ctx.out.write("\n")
