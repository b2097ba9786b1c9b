"""`jobd-cli alerts` (the firing alerts) and `jobd-cli alerts test` (docs/alerts.md)."""
from __future__ import annotations

import argparse
from typing import Any

from jobd import constants as C
from jobd_client import protocol as P

from .context import Context
from .tables import Column, ellipsis, short_time, table

ALERT_COLUMNS = (Column("RULE"), Column("SEVERITY"), Column("ON"), Column("SINCE"),
                 Column("LAST SENT"), Column("SUMMARY", flex=True))


def cmd_alerts(ctx: Context, args: argparse.Namespace) -> int:
    alerts = ctx.client.call(P.OP_ALERTS).get("alerts") or []
    if ctx.json:
        ctx.emit({"alerts": alerts})
        return C.CLI_OK
    if alerts:
        ctx.lines(alert_lines(alerts, ctx.width, ellipsis(ctx.out)))
    ctx.say(f"{len(alerts)} alert(s) firing" if alerts else "no alerts firing")
    return C.CLI_OK


def alert_lines(alerts: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    """A row per firing alert: its rule, what it is about (handler or queue), since when."""
    rows = [(a.get("rule"), a.get("labels", {}).get("severity", "-"), _subject(a),
             short_time(a.get("since")), short_time(a.get("last_sent")),
             a.get("annotations", {}).get("summary", "")) for a in alerts]
    return table(ALERT_COLUMNS, rows, width, mark)


def _subject(alert: dict[str, Any]) -> str:
    labels = alert.get("labels", {})
    for key in ("handler", "queue"):
        if key in labels:
            return f"{key} {labels[key]}"
    return "-"


def cmd_alert_test(ctx: Context, args: argparse.Namespace) -> int:
    reply = ctx.client.call(P.OP_ALERT_TEST)
    reply.pop("id", None)
    reply.pop("ok", None)
    if ctx.json:
        ctx.emit(reply)
    elif reply.get("queued"):
        ctx.say(f"test alert {reply.get('alertname')} queued for "
                f"{', '.join(reply.get('targets') or [])}")
    else:
        ctx.say("no alert targets configured ([alerts] command or webhook_url): nothing sent")
    return C.CLI_OK if reply.get("queued") else C.CLI_OP_ERROR
