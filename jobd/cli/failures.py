"""`jobd-cli failures`: failed or dead-letter jobs grouped by what went wrong (docs/cli.md).

One line per failure group, largest first: how many jobs it holds, its
handler, the error type, the normalised message and when it was last seen,
with its signature in full (an operator copies it into `retry --all
--signature S` or `list --signature S`).
"""
from __future__ import annotations

import argparse
from typing import Any

from jobd import constants as C
from jobd_client import protocol as P

from .context import Context
from .tables import Column, ellipsis, short_time, table

FAILURE_COLUMNS = (Column("COUNT", right=True), Column("HANDLER", flex=True, dotted=True),
                   Column("TYPE"), Column("MESSAGE", flex=True), Column("LAST SEEN"),
                   Column("SIGNATURE"))


def cmd_failures(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.call(P.OP_FAILURE_GROUPS, status=args.status, queue=args.queue,
                           handler=args.handler, limit=args.limit)
    if ctx.json:
        ctx.emit(body)
        return C.CLI_OK
    groups = body.get("groups") or []
    if groups:
        ctx.lines(failure_table(groups, ctx.width, ellipsis(ctx.out)))
    ctx.say(footer(len(groups), body.get("total"), args.status or C.DEAD_LETTER))
    return C.CLI_OK


def failure_table(groups: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    """Signatures in full; the message and then the handler give way to fit `width`."""
    rows = [(g.get("count"), g.get("handler"), g.get("error_type"), g.get("message"),
             short_time(g.get("last_seen")), g.get("signature")) for g in groups]
    return table(FAILURE_COLUMNS, rows, width, mark)


def footer(shown: int, total: Any, status: str) -> str:
    total = total if isinstance(total, int) else shown
    if not total:
        return f"no {status} jobs"
    more = f" of {total} (use --limit for more)" if shown < total else ""
    return (f"{shown} failure group(s){more} of {status} jobs; retry or purge one with "
            "--signature S")
