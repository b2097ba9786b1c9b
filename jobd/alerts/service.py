"""The daemon's alerts: evaluate the rules, keep the firing state, hand
notices to the couriers (docs/alerts.md).

On the loop, every `interval` seconds (5 at most): the rules read the
daemon through `AlertSources`, the `AlertBook` says which notices are due,
each becomes an `alert.firing`/`alert.resolved` event and a body queued for
every target. Nothing here waits for a receiver: the couriers' threads do.

Durability: `alerts.json` in the data dir (0600; a temp file fsynced and
renamed, written on a helper thread) holds the firing alerts with `since`
and `last_sent`, and the outbox: every notice not yet delivered to all its
targets. A restart loads both: a firing alert is not paged again before its
`repeat_interval`, an undelivered notice (a resolve too) is sent again.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from jobd import constants as C
from jobd.alerts import rules
from jobd.alerts.delivery import CommandTarget, Courier, WebhookTarget, load_secret
from jobd.alerts.rules import AlertBook, AlertSources, Notice
from jobd.config import AlertsConfig
from jobd.storage import files

log = logging.getLogger("jobd")

STATE_FILE = "alerts.json"
STATE_VERSION = 1
STOP_WAIT_S = 1.0       # at shutdown, most we wait for a courier's current attempt


class Events(Protocol):
    def publish(self, name: str, job_id: str | None, data: dict[str, Any]) -> None: ...


@dataclass
class _Outgoing:
    notice: Notice
    targets: set[str]


class AlertService:
    def __init__(self, *, settings: AlertsConfig, data_dir: str, sources: AlertSources,
                 events: Events, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float], first_backoff: float = 1.0) -> None:
        self.settings = settings
        self.specs = rules.rule_specs(settings.rules)
        self.path = os.path.join(data_dir, STATE_FILE)
        self.sources = sources
        self.events = events
        self.loop = loop
        self.clock = clock
        self.base = {"instance": socket.gethostname()}
        self.couriers = {c.target.name: c for c in self._couriers(first_backoff)}
        firing, outbox = self._load()
        self.book = AlertBook(settings.repeat_interval, firing)
        self.outbox: dict[str, _Outgoing] = outbox
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="jobd-alerts-state")
        self._timer: asyncio.Handle | None = None
        self._stopped = False
        self.evaluated_at: float | None = None     # the last evaluation (op `alerts`)

    def _couriers(self, first_backoff: float) -> list[Courier]:
        s, out = self.settings, []
        from jobd import __version__
        if s.command:
            out.append(Courier(CommandTarget(list(s.command)), self._done_threadsafe,
                               first_backoff))
        if s.webhook_url:
            secret = load_secret(s.webhook_secret_file) if s.webhook_secret_file else None
            out.append(Courier(WebhookTarget(s.webhook_url, secret,
                                             user_agent=f"jobd/{__version__}"),
                               self._done_threadsafe, first_backoff))
        return out

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        for courier in self.couriers.values():
            courier.start()
        for notice_id, out in list(self.outbox.items()):   # left undelivered by the last run
            self._hand_over(out)
            if not out.targets:
                del self.outbox[notice_id]
        self._timer = self.loop.call_soon(self.evaluate)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._stopped = True
        couriers = list(self.couriers.values())
        await asyncio.gather(*(self.loop.run_in_executor(None, c.stop, STOP_WAIT_S)
                               for c in couriers))
        await self.loop.run_in_executor(self._writer, self._write, self._snapshot())
        self._writer.shutdown(wait=True)

    # --- evaluation ---------------------------------------------------------------------
    def evaluate(self) -> None:
        self._timer = self.loop.call_later(self.settings.interval, self.evaluate)
        now = self.clock()
        try:
            conds = rules.conditions(self.specs, self.sources, now, self.base)
        except Exception:  # noqa: BLE001 - a bug in a rule must not stop the others next time
            log.exception("alerts: evaluating the rules failed")
            return
        self.evaluated_at = now
        notices = self.book.update(conds, now)
        for notice in notices:
            self._announce(notice)
            self._queue(notice)
        if notices:
            self._save()

    def _announce(self, notice: Notice) -> None:
        """An event for each change of state (repeats are not changes)."""
        repeat = notice.status == rules.FIRING and notice.at != notice.starts_at
        if repeat:
            log.warning("alert %s still firing: %s", notice.labels["alertname"],
                        notice.annotations.get("summary", ""))
            return
        name = C.EV_ALERT_FIRING if notice.status == rules.FIRING else C.EV_ALERT_RESOLVED
        level = logging.ERROR if notice.status == rules.FIRING else logging.INFO
        log.log(level, "alert %s %s: %s", notice.labels["alertname"], notice.status,
                notice.annotations.get("summary", ""))
        self.events.publish(name, None, {
            "rule": notice.labels["alertname"], "fingerprint": notice.fingerprint,
            "labels": notice.labels, "annotations": notice.annotations,
            "since": rules.iso(notice.starts_at),
            "resolved_at": rules.iso(notice.at) if notice.status == rules.RESOLVED else None})

    def _queue(self, notice: Notice) -> bool:
        if not self.couriers:
            return False
        out = self.outbox[notice.id] = _Outgoing(notice, set(self.couriers))
        self._hand_over(out)
        return True

    def _hand_over(self, out: _Outgoing) -> None:
        body = orjson.dumps(rules.payload(out.notice))
        for name in sorted(out.targets):
            courier = self.couriers.get(name)
            if courier is None:          # a target removed from the config since
                out.targets.discard(name)
            else:
                courier.put(out.notice.id, body)

    # --- delivery outcomes (from the couriers' threads) -----------------------------------
    def _done_threadsafe(self, notice_id: str, target: str, delivered: bool) -> None:
        try:
            self.loop.call_soon_threadsafe(self._done, notice_id, target)
        except RuntimeError:        # the loop is closed: the outbox on disk still has it
            pass

    def _done(self, notice_id: str, target: str) -> None:
        out = self.outbox.get(notice_id)
        if out is None:
            return
        out.targets.discard(target)
        if not out.targets:
            del self.outbox[notice_id]
        self._save()

    # --- ops ----------------------------------------------------------------------------
    def views(self) -> dict[str, Any]:
        """The firing alerts, oldest first, and when the rules last ran."""
        firing = sorted(self.book.firing.values(), key=lambda a: a.since)
        last = self.evaluated_at
        return {"alerts": [a.view() for a in firing],
                "evaluated_at": rules.iso(last) if last is not None else None}

    def send_test(self) -> dict[str, Any]:
        """Queue `JobdTest` for every target; says whether anything was queued."""
        notice = rules.probe_notice(self.base, self.clock())
        queued = self._queue(notice)
        if queued:
            self._save()
        return {"queued": queued, "targets": sorted(self.couriers), "alertname": rules.TEST_ALERT,
                "fingerprint": notice.fingerprint}

    def firing_counts(self) -> dict[str, int]:
        """Firing alerts per rule (every rule, 0 included): `jobd_alerts_firing`."""
        out = dict.fromkeys(self.specs, 0)
        for alert in self.book.firing.values():
            out[alert.rule] = out.get(alert.rule, 0) + 1
        return out

    # --- state file ---------------------------------------------------------------------
    def _snapshot(self) -> bytes:
        return orjson.dumps({
            "version": STATE_VERSION,
            "firing": [a.to_dict() for a in self.book.firing.values()],
            "outbox": [{**o.notice.to_dict(), "targets": sorted(o.targets)}
                       for o in self.outbox.values()]})

    def _save(self) -> None:
        # Snapshots are taken in order on the loop and written in order by one
        # thread; after `stop` (its final write) late delivery reports are left
        # to the next start's outbox.
        if not self._stopped:
            self._writer.submit(self._write, self._snapshot())

    def _write(self, data: bytes) -> None:
        try:
            files.replace_file(self.path, data)
        except OSError as e:
            log.error("alerts: cannot save %s (firing alerts may be paged again after a "
                      "restart): %s", self.path, e)

    def _load(self) -> tuple[list[rules.Alert], dict[str, _Outgoing]]:
        try:
            data = orjson.loads(files.read(self.path))
        except FileNotFoundError:
            return [], {}
        except (OSError, orjson.JSONDecodeError) as e:
            log.error("alerts: cannot read %s, starting with no firing alerts: %s", self.path, e)
            return [], {}
        try:
            firing = [rules.Alert.from_dict(a) for a in data.get("firing", [])]
            outbox = {}
            for d in data.get("outbox", []):
                notice = Notice.from_dict(d)
                outbox[notice.id] = _Outgoing(notice, set(d.get("targets", [])))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            log.error("alerts: %s is malformed, starting with no firing alerts: %s", self.path, e)
            return [], {}
        return firing, outbox
