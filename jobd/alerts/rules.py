"""The alert rules and their firing/resolved state machine (pure: no I/O).

A rule looks at the daemon through `AlertSources` and yields a `Condition`
per thing that is wrong now (a handler, a queue, the storage). `AlertBook`
turns the conditions seen at each evaluation into `Notice`s: `firing` once
when a condition has held for its rule's `for_s`, again every
`repeat_interval` while it holds, and `resolved` once when it is gone. An
alert is named by its fingerprint, a hash of its labels: the same handler's
quarantine is the same alert across evaluations and restarts.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

HANDLER_QUARANTINED = "HandlerQuarantined"
STORAGE_ERROR = "StorageError"
BREAKER_OPEN = "BreakerOpen"
DEAD_LETTER_BURST = "DeadLetterBurst"
QUEUE_STALLED = "QueueStalled"
TEST_ALERT = "JobdTest"              # the alertname of `alert_test`'s alert

CRITICAL = "critical"
WARNING = "warning"
INFO = "info"
FIRING = "firing"
RESOLVED = "resolved"
# Alertmanager's "no end yet" for a firing alert's endsAt.
NO_END = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class RuleSpec:
    """One rule as configured (`[alerts.rules.NAME]` over the defaults)."""

    name: str
    severity: str
    enabled: bool = True
    for_s: float = 0.0           # how long it holds before it fires (see each rule)
    count: int = 0               # DeadLetterBurst: dead letters ...
    window_s: float = 0.0        # ... within this many seconds


DEFAULTS: dict[str, RuleSpec] = {
    HANDLER_QUARANTINED: RuleSpec(HANDLER_QUARANTINED, CRITICAL),
    STORAGE_ERROR: RuleSpec(STORAGE_ERROR, CRITICAL),
    BREAKER_OPEN: RuleSpec(BREAKER_OPEN, WARNING, for_s=600.0),
    DEAD_LETTER_BURST: RuleSpec(DEAD_LETTER_BURST, WARNING, count=10, window_s=300.0),
    QUEUE_STALLED: RuleSpec(QUEUE_STALLED, WARNING, for_s=900.0),
}
# The keys a `[alerts.rules.NAME]` table takes, with a check of each value.
_RULE_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "enabled": (lambda v: isinstance(v, bool), "true or false"),
    "for_s": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "severity": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a short string"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
              "an integer >= 1"),
    "window_s": (lambda v: _number(v) and v > 0, "a number > 0"),
}
_BURST_ONLY = ("count", "window_s")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def rule_specs(tables: dict[str, Any]) -> dict[str, RuleSpec]:
    """The five rules with the `[alerts.rules.NAME]` tables applied; a bad
    name, key or value raises ValueError naming it."""
    specs = dict(DEFAULTS)
    for name, table in tables.items():
        where = f"alerts.rules.{name}"
        if name not in DEFAULTS:
            raise ValueError(f"{where}: no rule named {name!r} (rules: {', '.join(DEFAULTS)})")
        if not isinstance(table, dict):
            raise ValueError(f"{where}: expected a table")
        for key, value in table.items():
            check = _RULE_KEYS.get(key)
            if check is None or (key in _BURST_ONLY and name != DEAD_LETTER_BURST):
                raise ValueError(f"{where}.{key}: unknown key for this rule")
            if not check[0](value):
                raise ValueError(f"{where}.{key}: must be {check[1]}")
        numbers = {k: float(v) for k, v in table.items() if k in ("for_s", "window_s")}
        specs[name] = replace(specs[name], **{**table, **numbers})
    return specs


class AlertSources(Protocol):
    """What the rules read (the daemon implements it; tests use fakes)."""

    def quarantined(self) -> dict[str, str]: ...                  # handler -> reason
    def breakers_open(self) -> dict[str, float]: ...              # handler -> opened at (epoch)
    def storage_error(self) -> str | None: ...                    # the WAL's failure, if failing
    def dead_letters(self, window_s: float) -> dict[str, int]: ...  # handler -> count in window
    def stalled_queues(self, threshold_s: float) -> dict[str, float]: ...  # queue -> age (s)


@dataclass(frozen=True)
class Condition:
    """Something wrong now. `hold_s`: how long it must be seen before it
    fires (0 when the rule measured the duration itself)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    hold_s: float = 0.0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits naming an alert by its labels (Alertmanager's length)."""
    text = "\0".join(f"{k}\0{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _labels(spec: RuleSpec, base: dict[str, str], **extra: str) -> dict[str, str]:
    return {**base, "alertname": spec.name, "severity": spec.severity, **extra}


def _quarantined(spec: RuleSpec, src: AlertSources, now: float,
                 base: dict[str, str]) -> Iterator[Condition]:
    for handler, reason in sorted(src.quarantined().items()):
        yield Condition(_labels(spec, base, handler=handler), {
            "summary": f"handler {handler} is quarantined",
            "description": f"Its jobs are held until an operator releases it "
                           f"(jobd-cli handlers release {handler}). Reason: {reason}"},
            spec.for_s)


def _storage(spec: RuleSpec, src: AlertSources, now: float,
             base: dict[str, str]) -> Iterator[Condition]:
    error = src.storage_error()
    if error is not None:
        yield Condition(_labels(spec, base), {
            "summary": "jobd cannot write its log",
            "description": f"Submits are refused and changes are not durable: {error}"},
            spec.for_s)


def _breaker(spec: RuleSpec, src: AlertSources, now: float,
             base: dict[str, str]) -> Iterator[Condition]:
    for handler, opened_at in sorted(src.breakers_open().items()):
        if now - opened_at >= spec.for_s:
            minutes = (now - opened_at) / 60
            yield Condition(_labels(spec, base, handler=handler), {
                "summary": f"circuit breaker of handler {handler} open for {minutes:.0f} min",
                "description": "Its jobs are held; the service it calls is probably down. "
                               f"Opened at {iso(opened_at)}."})


def _burst(spec: RuleSpec, src: AlertSources, now: float,
           base: dict[str, str]) -> Iterator[Condition]:
    for handler, n in sorted(src.dead_letters(spec.window_s).items()):
        if n >= spec.count:
            yield Condition(_labels(spec, base, handler=handler), {
                "summary": f"{n} jobs of handler {handler} dead-lettered in "
                           f"{spec.window_s:g}s",
                "description": f"jobd-cli list --status dead_letter --handler {handler}"},
                spec.for_s)


def _stalled(spec: RuleSpec, src: AlertSources, now: float,
             base: dict[str, str]) -> Iterator[Condition]:
    for queue, age in sorted(src.stalled_queues(spec.for_s).items()):
        yield Condition(_labels(spec, base, queue=queue), {
            "summary": f"queue {queue}: a due job has waited {age:.0f}s",
            "description": "Its oldest due job has not started; are its workers busy, "
                           "stuck or scaled to 0?"})


Rule = Callable[[RuleSpec, AlertSources, float, dict[str, str]], Iterable[Condition]]
RULES: dict[str, Rule] = {
    HANDLER_QUARANTINED: _quarantined, STORAGE_ERROR: _storage, BREAKER_OPEN: _breaker,
    DEAD_LETTER_BURST: _burst, QUEUE_STALLED: _stalled,
}


def conditions(specs: dict[str, RuleSpec], src: AlertSources, now: float,
               base: dict[str, str] | None = None) -> list[Condition]:
    """Every condition of the enabled rules, now. `base`: labels every alert carries."""
    out: list[Condition] = []
    for name, spec in specs.items():
        if spec.enabled:
            out.extend(RULES[name](spec, src, now, base or {}))
    return out


@dataclass
class Alert:
    """A firing alert (kept in the data dir across restarts)."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    since: float                 # firing since
    last_sent: float             # the last firing notice was queued then

    @property
    def rule(self) -> str:
        return self.labels.get("alertname", "")

    def view(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "rule": self.rule, "labels": self.labels,
                "annotations": self.annotations, "since": iso(self.since),
                "last_sent": iso(self.last_sent)}

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "labels": self.labels,
                "annotations": self.annotations, "since": self.since,
                "last_sent": self.last_sent}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        return cls(str(d["fingerprint"]), dict(d["labels"]), dict(d["annotations"]),
                   float(d["since"]), float(d["last_sent"]))


@dataclass(frozen=True)
class Notice:
    """One notification to send: an alert firing (again) or resolved at `at`."""

    status: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    at: float
    id: str = field(default="")          # idempotency key (the webhook-id header)

    @classmethod
    def of(cls, status: str, alert: Alert, at: float) -> Notice:
        return cls(status, alert.fingerprint, dict(alert.labels), dict(alert.annotations),
                   alert.since, at, f"{alert.fingerprint}-{status}-{round(at * 1000)}")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "fingerprint": self.fingerprint, "labels": self.labels,
                "annotations": self.annotations, "starts_at": self.starts_at, "at": self.at,
                "id": self.id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notice:
        return cls(str(d["status"]), str(d["fingerprint"]), dict(d["labels"]),
                   dict(d["annotations"]), float(d["starts_at"]), float(d["at"]), str(d["id"]))


class AlertBook:
    """The firing state machine. Invariant: an alert is in `firing` from the
    evaluation that sent its first firing notice to the one that sent its
    resolved notice; `pending` holds conditions still waiting out `hold_s`."""

    def __init__(self, repeat_interval: float, firing: Iterable[Alert] = ()) -> None:
        self.repeat_interval = repeat_interval
        self.firing: dict[str, Alert] = {a.fingerprint: a for a in firing}
        self.pending: dict[str, float] = {}      # fingerprint -> first seen

    def update(self, conds: Iterable[Condition], now: float) -> list[Notice]:
        """The notices due after an evaluation that saw exactly `conds`."""
        out: list[Notice] = []
        seen: set[str] = set()
        for cond in conds:
            fp = cond.fingerprint
            seen.add(fp)
            alert = self.firing.get(fp)
            if alert is None:
                self._maybe_fire(cond, fp, now, out)
            else:
                alert.annotations = cond.annotations      # the latest figures
                if now - alert.last_sent >= self.repeat_interval:
                    alert.last_sent = now
                    out.append(Notice.of(FIRING, alert, now))
        for fp in [fp for fp in self.pending if fp not in seen]:
            del self.pending[fp]
        for fp in [fp for fp in self.firing if fp not in seen]:
            out.append(Notice.of(RESOLVED, self.firing.pop(fp), now))
        return out

    def _maybe_fire(self, cond: Condition, fp: str, now: float, out: list[Notice]) -> None:
        first = self.pending.setdefault(fp, now)
        if now - first >= cond.hold_s:
            del self.pending[fp]
            alert = self.firing[fp] = Alert(fp, cond.labels, cond.annotations, now, now)
            out.append(Notice.of(FIRING, alert, now))


def probe_notice(base: dict[str, str], now: float) -> Notice:
    """`alert_test`'s alert: firing, never kept, never resolved."""
    labels = {**base, "alertname": TEST_ALERT, "severity": INFO}
    alert = Alert(fingerprint(labels), labels, {
        "summary": "jobd test alert", "description": "Sent by alert_test (jobd-cli alerts "
        "test): if you read this, jobd's alerts reach you."}, now, now)
    return replace(Notice.of(FIRING, alert, now), id=f"{alert.fingerprint}-test-{round(now * 1e6)}")


def payload(notice: Notice) -> dict[str, Any]:
    """The Alertmanager webhook body (version 4) of one notice; the command
    gets the same object."""
    alert = {"status": notice.status, "labels": notice.labels,
             "annotations": notice.annotations, "startsAt": iso(notice.starts_at),
             "endsAt": iso(notice.at) if notice.status == RESOLVED else NO_END,
             "generatorURL": "", "fingerprint": notice.fingerprint}
    name = notice.labels.get("alertname", "")
    return {"version": "4", "groupKey": f'{{}}:{{alertname="{name}"}}', "truncatedAlerts": 0,
            "status": notice.status, "receiver": "jobd", "groupLabels": {"alertname": name},
            "commonLabels": notice.labels, "commonAnnotations": notice.annotations,
            "externalURL": "", "alerts": [alert]}


def iso(ts: float) -> str:
    """Epoch seconds → RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
