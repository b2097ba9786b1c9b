"""jobd/alerts/rules.py: the rules over fake sources, and the firing/resolved
state machine (pure: fake sources and a given clock, no daemon)."""
from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

import pytest

from jobd.alerts import rules
from jobd.alerts.delivery import backoff, load_secret, sign_headers
from jobd.alerts.inputs import DeadLetterWindow
from jobd.alerts.rules import (
    BREAKER_OPEN,
    DEAD_LETTER_BURST,
    FIRING,
    HANDLER_QUARANTINED,
    QUEUE_STALLED,
    RESOLVED,
    STORAGE_ERROR,
    AlertBook,
    conditions,
    payload,
    rule_specs,
)


@dataclass
class FakeSources:
    quarantine: dict[str, str] = field(default_factory=dict)
    breakers: dict[str, float] = field(default_factory=dict)
    storage: str | None = None
    dead: dict[str, int] = field(default_factory=dict)
    ages: dict[str, float] = field(default_factory=dict)

    def quarantined(self) -> dict[str, str]:
        return dict(self.quarantine)

    def breakers_open(self) -> dict[str, float]:
        return dict(self.breakers)

    def storage_error(self) -> str | None:
        return self.storage

    def dead_letters(self, window_s: float) -> dict[str, int]:
        return dict(self.dead)

    def stalled_queues(self, threshold_s: float) -> dict[str, float]:
        return {q: a for q, a in self.ages.items() if a > threshold_s}


SPECS = rule_specs({})


def names(src: FakeSources, now: float = 1000.0, specs: dict[str, rules.RuleSpec] = SPECS
          ) -> list[tuple[str, str, str]]:
    return [(c.labels["alertname"], c.labels["severity"],
             c.labels.get("handler") or c.labels.get("queue") or "")
            for c in conditions(specs, src, now)]


def test_quiet_sources_raise_nothing() -> None:
    assert names(FakeSources()) == []


def test_handler_quarantined_is_critical_per_handler() -> None:
    src = FakeSources(quarantine={"b": "3 trips", "a": "crashes"})
    assert names(src) == [(HANDLER_QUARANTINED, "critical", "a"),
                          (HANDLER_QUARANTINED, "critical", "b")]


def test_storage_error_is_critical_and_names_the_error() -> None:
    src = FakeSources(storage="WAL write failed: [Errno 28] No space left on device")
    conds = conditions(SPECS, src, 0.0)
    assert [(c.labels["alertname"], c.labels["severity"]) for c in conds] == [
        (STORAGE_ERROR, "critical")]
    assert "No space left" in conds[0].annotations["description"]
    assert "handler" not in conds[0].labels and "queue" not in conds[0].labels


def test_breaker_open_fires_after_600s_open() -> None:
    now = 10_000.0
    src = FakeSources(breakers={"young": now - 599, "old": now - 600})
    assert names(src, now) == [(BREAKER_OPEN, "warning", "old")]


def test_dead_letter_burst_needs_count_in_window() -> None:
    assert names(FakeSources(dead={"h": 9})) == []
    assert names(FakeSources(dead={"h": 10})) == [(DEAD_LETTER_BURST, "warning", "h")]
    tuned = rule_specs({DEAD_LETTER_BURST: {"count": 2, "window_s": 5}})
    assert names(FakeSources(dead={"h": 2}), specs=tuned) == [(DEAD_LETTER_BURST, "warning", "h")]


def test_queue_stalled_past_900s() -> None:
    src = FakeSources(ages={"default": 900.0, "mail": 901.0})
    assert names(src) == [(QUEUE_STALLED, "warning", "mail")]


def test_a_rule_can_be_switched_off_and_retuned() -> None:
    specs = rule_specs({HANDLER_QUARANTINED: {"enabled": False},
                        QUEUE_STALLED: {"for_s": 5, "severity": "page"}})
    src = FakeSources(quarantine={"a": "x"}, ages={"q": 6.0})
    assert names(src, specs=specs) == [(QUEUE_STALLED, "page", "q")]


@pytest.mark.parametrize("table, message", [
    ({"Nope": {}}, "no rule named"),
    ({HANDLER_QUARANTINED: {"count": 3}}, "unknown key"),
    ({DEAD_LETTER_BURST: {"count": 0}}, "integer >= 1"),
    ({QUEUE_STALLED: {"for_s": -1}}, ">= 0"),
    ({QUEUE_STALLED: {"enabled": "no"}}, "true or false"),
    ({QUEUE_STALLED: 3}, "expected a table"),
])
def test_bad_rule_tables_are_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rule_specs(table)


# --- the state machine --------------------------------------------------------------------

def run(book: AlertBook, src: FakeSources, now: float) -> list[tuple[str, str]]:
    return [(n.status, n.labels["alertname"]) for n in book.update(conditions(SPECS, src, now), now)]


def test_fires_once_repeats_and_resolves() -> None:
    book = AlertBook(repeat_interval=100)
    src = FakeSources(quarantine={"h": "r"})
    assert run(book, src, 0) == [(FIRING, HANDLER_QUARANTINED)]
    assert run(book, src, 5) == []
    assert run(book, src, 99) == []
    assert run(book, src, 100) == [(FIRING, HANDLER_QUARANTINED)]      # the repeat
    assert run(book, src, 150) == []
    src.quarantine.clear()
    assert run(book, src, 160) == [(RESOLVED, HANDLER_QUARANTINED)]
    assert run(book, src, 170) == []
    assert book.firing == {}


def test_for_s_holds_back_a_rule_that_does_not_measure_time_itself() -> None:
    specs = rule_specs({STORAGE_ERROR: {"for_s": 10}})
    book = AlertBook(repeat_interval=1000)
    src = FakeSources(storage="disk full")

    def step(now: float) -> list[str]:
        return [n.status for n in book.update(conditions(specs, src, now), now)]
    assert step(0) == [] and step(9) == []
    assert step(10) == [FIRING]
    src.storage = None
    assert step(11) == [RESOLVED]
    src.storage = "again"          # a flap starts the wait over
    assert step(12) == [] and step(21) == [] and step(22) == [FIRING]


def test_a_condition_that_clears_before_for_s_never_fires_or_resolves() -> None:
    specs = rule_specs({STORAGE_ERROR: {"for_s": 10}})
    book = AlertBook(repeat_interval=1000)
    assert book.update(conditions(specs, FakeSources(storage="x"), 0), 0) == []
    assert book.update(conditions(specs, FakeSources(), 5), 5) == []
    assert book.pending == {}


def test_each_handler_is_its_own_alert() -> None:
    book = AlertBook(repeat_interval=1000)
    src = FakeSources(breakers={"a": 0.0, "b": 0.0})
    first = book.update(conditions(SPECS, src, 700), 700)
    assert len({n.fingerprint for n in first}) == 2
    del src.breakers["a"]
    out = book.update(conditions(SPECS, src, 710), 710)
    assert [(n.status, n.labels["handler"]) for n in out] == [(RESOLVED, "a")]


def test_firing_state_restored_means_no_new_page() -> None:
    """What a restart does: the book is rebuilt from the saved alerts."""
    src = FakeSources(quarantine={"h": "r"})
    book = AlertBook(repeat_interval=100)
    book.update(conditions(SPECS, src, 0), 0)
    saved = [rules.Alert.from_dict(a.to_dict()) for a in book.firing.values()]
    again = AlertBook(repeat_interval=100, firing=saved)
    assert run(again, src, 50) == []
    assert run(again, src, 100) == [(FIRING, HANDLER_QUARANTINED)]
    assert run(again, FakeSources(), 120) == [(RESOLVED, HANDLER_QUARANTINED)]


def test_fingerprint_depends_on_labels_only() -> None:
    a = rules.fingerprint({"alertname": "X", "handler": "h"})
    assert a == rules.fingerprint({"handler": "h", "alertname": "X"})
    assert a != rules.fingerprint({"alertname": "X", "handler": "g"})
    assert len(a) == 16 and int(a, 16) >= 0


def test_payload_is_alertmanager_shaped() -> None:
    book = AlertBook(repeat_interval=100)
    src = FakeSources(quarantine={"h": "r"})
    (fired,) = book.update(conditions(SPECS, src, 1_700_000_000.0), 1_700_000_000.0)
    (resolved,) = book.update([], 1_700_000_060.0)
    body = payload(fired)
    assert body["status"] == FIRING and body["version"] == "4"
    (alert,) = body["alerts"]
    assert alert["labels"]["alertname"] == HANDLER_QUARANTINED
    assert alert["labels"]["handler"] == "h" and alert["labels"]["severity"] == "critical"
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert alert["endsAt"] == rules.NO_END
    assert alert["fingerprint"] == fired.fingerprint
    done = payload(resolved)["alerts"][0]
    assert done["status"] == RESOLVED and done["endsAt"] == "2023-11-14T22:14:20.000Z"
    assert done["startsAt"] == alert["startsAt"]
    assert fired.id != resolved.id


# --- helpers of the inputs and the delivery ------------------------------------------------

def test_dead_letter_window_counts_the_trailing_window() -> None:
    w = DeadLetterWindow()
    assert w.counts({}, 0.0, 10) == {}
    assert w.counts({"h": 3}, 1.0, 10) == {"h": 3}
    assert w.counts({"h": 5}, 5.0, 10) == {"h": 5}
    assert w.counts({"h": 5}, 10.5, 10) == {"h": 5}      # the sample at 0.0 is the base
    assert w.counts({"h": 5}, 11.0, 10) == {"h": 2}      # now the one at 1.0
    assert w.counts({"h": 5}, 15.0, 10) == {}
    assert len(w.samples) <= 4


def test_signature_is_standard_webhooks(tmp_path: object) -> None:
    key = b"0123456789abcdef0123"
    headers = sign_headers(key, "msg_1", 1_700_000_000, b'{"a":1}')
    expected = base64.b64encode(hmac.new(key, b'msg_1.1700000000.{"a":1}', hashlib.sha256)
                                .digest()).decode()
    assert headers == {"webhook-id": "msg_1", "webhook-timestamp": "1700000000",
                       "webhook-signature": "v1," + expected}


def test_secret_file_must_be_whsec_base64(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path
    p = Path(str(tmp_path)) / "secret"
    p.write_text("whsec_" + base64.b64encode(b"key bytes").decode() + "\n")
    assert load_secret(str(p)) == b"key bytes"
    p.write_text("key bytes")
    with pytest.raises(ValueError, match="whsec_"):
        load_secret(str(p))
    p.write_text("whsec_***")
    with pytest.raises(ValueError, match="base64"):
        load_secret(str(p))


def test_backoff_doubles_up_to_a_cap() -> None:
    assert 0.8 <= backoff(1) <= 1.2
    assert 3.2 <= backoff(3) <= 4.8
    assert backoff(30) <= 300 * 1.2


# --- the daemon's handler gates, as the rules read them -------------------------------------

@dataclass
class FakeBreaker:
    state: str = "closed"
    opened_at: float | None = None

    def current(self, now: float) -> str:
        return self.state


@dataclass
class FakeLane:
    pending: int = 0


@dataclass
class FakeGate:
    known: bool = True
    quarantine: tuple[str, float] | None = None
    breaker: FakeBreaker = field(default_factory=FakeBreaker)
    lanes: list[FakeLane] = field(default_factory=list)


def test_quarantined_reads_quarantines_and_unregistered_handlers_with_jobs() -> None:
    from jobd.alerts.inputs import quarantined
    gates = {"q": FakeGate(quarantine=("3 trips", 5.0)), "ok": FakeGate(),
             "gone": FakeGate(known=False, lanes=[FakeLane(2)]),
             "gone_empty": FakeGate(known=False, lanes=[FakeLane(0)])}
    found = quarantined(gates)
    assert set(found) == {"q", "gone"} and found["q"] == "3 trips"


def test_a_breaker_outage_counts_from_its_first_opening_across_reopens() -> None:
    from jobd.alerts.inputs import BreakerOutages
    gate = FakeGate(breaker=FakeBreaker("open", 100.0))
    outages = BreakerOutages()
    assert outages.open({"h": gate}, 110.0) == {"h": 100.0}
    gate.breaker = FakeBreaker("half_open", 100.0)
    assert outages.open({"h": gate}, 140.0) == {"h": 100.0}
    gate.breaker = FakeBreaker("open", 141.0)            # the trial failed: re-opened
    assert outages.open({"h": gate}, 150.0) == {"h": 100.0}
    gate.breaker = FakeBreaker("closed", None)
    assert outages.open({"h": gate}, 200.0) == {}
    gate.breaker = FakeBreaker("open", 300.0)
    assert outages.open({"h": gate}, 301.0) == {"h": 300.0}
