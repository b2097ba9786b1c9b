"""jobd/core/job.py: a new job's slots, its persisted form (default fields left
off, shared empty containers restored), args/kwargs kept as JSON text and
shown decoded, inline results, job ids, the progress object, ISO times.

The WAL round trip of arbitrary jobs and iso()'s agreement with datetime
are property tests in tests/test_wal_codec.py and tests/test_units.py.
"""
from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from jobd import constants as C
from jobd.core.job import (
    EMPTY_ARGS,
    EMPTY_DICT,
    EMPTY_KWARGS,
    EMPTY_LIST,
    RECORD_FIELDS,
    Job,
    JobIds,
    compact_result,
    iso,
    parse_iso,
    progress_view,
)
from jobd.core.values import MAX_TIMESTAMP, MIN_TIMESTAMP

DEFAULTS = (3, 1.0, 2.0, None, None, None)   # max_retries .. max_delay, as Job.new takes them
T0 = 1_800_000_000.0


def new_job(job_id: str = "j1", *, name: str | None = None, args: bytes = EMPTY_ARGS,
            kwargs: bytes = EMPTY_KWARGS, tags: dict[str, Any] = EMPTY_DICT,
            depends_on: list[str] = EMPTY_LIST, defaults: tuple[Any, ...] = DEFAULTS) -> Job:
    return Job.new(job_id, "mod.fn", 10, 7, T0, defaults, name, args, kwargs, tags, depends_on)


def through_wal(rec: list[Any]) -> list[Any]:
    """What replay hands `from_record`: the record written as JSON and decoded."""
    decoded: list[Any] = orjson.loads(orjson.dumps(rec))
    return decoded


def field(rec: list[Any], name: str) -> Any:
    return rec[RECORD_FIELDS.index(name)]


# --- Job.new ------------------------------------------------------------------------------

def test_new_sets_every_slot_and_shares_the_empty_containers():
    job = new_job()
    for slot in Job.__slots__:
        getattr(job, slot)                 # none left unset
    assert (job.status, job.attempts, job.wal_seq, job.cancel_requested) == (C.PENDING, 0, 0, False)
    assert job.args is EMPTY_ARGS and job.kwargs is EMPTY_KWARGS
    assert job.tags is EMPTY_DICT and job.depends_on is EMPTY_LIST
    assert (job.max_retries, job.retry_delay, job.retry_backoff) == (3, 1.0, 2.0)
    assert job.terminal is False


def test_new_takes_the_merged_defaults_in_order():
    job = new_job(defaults=(5, 0.5, 3.0, 60.0, True, 120.0))
    assert (job.max_retries, job.retry_delay, job.retry_backoff, job.timeout, job.jitter,
            job.max_delay) == (5, 0.5, 3.0, 60.0, True, 120.0)


# --- to_record: default fields are left off --------------------------------------------------

def test_a_plain_new_job_writes_only_the_nine_required_fields():
    rec = new_job().to_record()
    assert rec == ["j1", "mod.fn", C.PENDING, 10, 7, T0, 3, 1.0, 2.0]


@pytest.mark.parametrize("kw,length,tail", [
    ({"name": "n"}, 10, ["n"]),
    ({"args": b"[1,2]"}, 11, [None, [1, 2]]),
    ({"kwargs": b'{"a":1}'}, 12, [None, [], {"a": 1}]),
    ({"name": "n", "args": b'["x"]', "kwargs": b'{"k":null}'}, 12, ["n", ["x"], {"k": None}]),
])
def test_name_args_and_kwargs_extend_the_record_only_as_far_as_needed(kw, length, tail):
    rec = through_wal(new_job(**kw).to_record())
    assert len(rec) == length
    assert rec[9:] == tail


def test_a_changed_field_keeps_the_defaults_before_it_and_drops_those_after():
    job = new_job()
    job.cancel_requested = True
    rec = job.to_record()
    assert len(rec) == RECORD_FIELDS.index("cancel_requested") + 1
    assert field(rec, "attempts") == 0 and field(rec, "tags") == {}
    assert field(rec, "cancel_requested") is True
    job.replay_of = "j0"                   # the last field: the whole record
    assert len(job.to_record()) == len(RECORD_FIELDS)


def test_values_equal_to_a_default_are_left_off_even_when_not_the_shared_object():
    job = new_job(tags={}, depends_on=[])  # equal to the defaults, other objects
    job.attempts = 2
    rec = job.to_record()
    assert len(rec) == RECORD_FIELDS.index("attempts") + 1
    assert rec[-1] == 2


def test_a_false_or_zero_is_not_taken_for_a_default_of_another_type():
    job = new_job()
    job.progress = {}                      # default None: {} must be kept
    job.jitter = False                     # default None: False must be kept
    rec = through_wal(job.to_record())
    back = Job.from_record(rec)
    assert back.progress == {} and back.jitter is False


# --- from_record --------------------------------------------------------------------------

def test_from_record_of_a_short_record_restores_the_shared_defaults():
    job = Job.from_record(through_wal(new_job().to_record()))
    assert job.args is EMPTY_ARGS and job.kwargs is EMPTY_KWARGS
    assert job.tags is EMPTY_DICT and job.depends_on is EMPTY_LIST
    assert (job.attempts, job.timeout, job.name, job.worker_id, job.result) == (0, None, None,
                                                                                None, None)
    assert job.cancel_requested is False and job.finished_attempt_at is None
    assert job.wal_seq == 0


def test_from_record_interns_handler_and_status():
    handler = "".join(["mod.", "dynamic_name"])   # built at run time: not interned yet
    rec = through_wal(Job.new("j", handler, 10, 1, T0, DEFAULTS, None, EMPTY_ARGS,
                              EMPTY_KWARGS, EMPTY_DICT, EMPTY_LIST).to_record())
    a, b = Job.from_record(rec), Job.from_record(through_wal(rec))
    assert a.handler is b.handler is sys.intern("mod.dynamic_name")
    assert a.status is sys.intern(C.PENDING)


def test_from_record_does_not_keep_runtime_only_fields():
    job = new_job()
    job.finished_attempt_at = T0 + 5
    job.wal_seq = 42
    back = Job.from_record(through_wal(job.to_record()))
    assert back.finished_attempt_at is None and back.wal_seq == 0


def test_a_full_record_round_trips_every_persisted_field():
    job = new_job(name="n", args=b"[1]", kwargs=b'{"a":2}', tags={"t": True}, depends_on=["d"])
    job.status, job.attempts, job.timeout = C.RUNNING, 2, 9.5
    job.scheduled_for, job.started_at, job.completed_at = T0 + 1, T0 + 2, None
    job.progress = progress_view(1, 2, "half", T0 + 3)
    job.error, job.result_ref, job.cancel_requested = "boom", ["f.json", 10], True
    job.schedule, job.jitter, job.max_delay, job.worker_id = "nightly", True, 30.0, 4
    back = Job.from_record(through_wal(job.to_record()))
    for name in RECORD_FIELDS:
        if name not in ("args", "kwargs", "result"):
            assert getattr(back, name) == getattr(job, name), name
    assert (back.args, back.kwargs) == (b"[1]", b'{"a":2}')


# --- args and kwargs: JSON text, shown decoded ------------------------------------------------

def test_args_and_kwargs_are_kept_as_the_text_they_arrived_as_and_shown_decoded():
    job = new_job(args=b'[1,{"x":[true,null]}]', kwargs=b'{"k":"v"}')
    assert isinstance(job.args, bytes) and isinstance(job.kwargs, bytes)
    view = orjson.loads(orjson.dumps(job.view()))
    assert view["args"] == [1, {"x": [True, None]}]
    assert view["kwargs"] == {"k": "v"}


def test_replayed_args_are_compact_json_text_again():
    rec = through_wal(new_job(args=b'[1, 2, {"a": "b"}]', kwargs=b'{"z": [3]}').to_record())
    job = Job.from_record(rec)
    assert job.args == b'[1,2,{"a":"b"}]'
    assert job.kwargs == b'{"z":[3]}'


def test_view_has_iso_times_and_no_internal_fields():
    job = new_job()
    job.started_at = T0 + 0.25
    view = orjson.loads(orjson.dumps(job.view()))
    assert view["created_at"] == iso(T0) and view["started_at"] == iso(T0 + 0.25)
    assert view["completed_at"] is None and view["scheduled_for"] is None
    for internal in ("seq", "wal_seq", "result", "result_ref", "cancel_requested"):
        assert internal not in view


# --- compact_result --------------------------------------------------------------------------

def test_compact_result_leaves_none_and_fragments_alone_and_compacts_decoded_values():
    assert compact_result(None) is None
    frag = orjson.Fragment(b'{"a": 1}')
    assert compact_result(frag) is frag
    again = compact_result({"a": [1, 2], "b": None})
    assert type(again) is orjson.Fragment
    assert orjson.dumps(again) == b'{"a":[1,2],"b":null}'
    assert orjson.dumps(compact_result(0)) == b"0"        # falsy results are results
    assert orjson.dumps(compact_result("")) == b'""'


# --- the smaller helpers ------------------------------------------------------------------------

def test_job_ids_share_a_prefix_and_sort_in_the_order_they_were_issued():
    ids = JobIds()
    first = [ids.next() for _ in range(300)]
    assert {i[:20] for i in first} == {ids.prefix} and len(ids.prefix) == 20
    assert first[0][20:] == "000000000001" and first[255][20:] == "000000000100"
    assert first == sorted(first)


def test_duration_needs_both_ends_and_never_goes_negative():
    job = new_job()
    assert job.duration() is None
    job.started_at = T0
    assert job.duration() is None
    job.completed_at = T0 + 1.5
    assert job.duration() == 1.5
    job.completed_at = T0 - 3              # a clock step back
    assert job.duration() == 0.0


@pytest.mark.parametrize("tags,key,value,expected", [
    ({"env": "prod"}, "env", "prod", True),
    ({"env": "prod"}, "env", "dev", False),
    ({"n": 3}, "n", "3", True),
    ({"ok": True}, "ok", "true", True),
    ({"ok": False}, "ok", "false", True),
    ({"ok": True}, "ok", "True", False),
    ({}, "env", "prod", False),
])
def test_matches_tag_compares_as_text(tags, key, value, expected):
    assert new_job(tags=tags).matches_tag(key, value) is expected


def test_progress_view_rounds_clamps_and_stamps():
    view = progress_view(1, 3, "a third", T0)
    assert view == {"current": 1, "total": 3, "percentage": 33.33, "message": "a third",
                    "updated_at": iso(T0)}
    assert progress_view(-5, 10, "", T0)["percentage"] == 0.0
    assert progress_view(5, 0, "", T0)["percentage"] is None        # no total to divide by


# --- iso and parse_iso -------------------------------------------------------------------------

def test_iso_of_none_is_none():
    assert iso(None) is None


@pytest.mark.parametrize("ts,text", [
    (-0.5, "1969-12-31T23:59:59.500000Z"),
    (-1e-7, "1970-01-01T00:00:00.000000Z"),          # rounds up into the next second
    (MAX_TIMESTAMP, "9999-12-31T23:59:59.000000Z"),
    (951782400.0, "2000-02-29T00:00:00.000000Z"),    # a leap day
])
def test_iso_before_the_epoch_and_at_the_edges(ts, text):
    assert iso(ts) == text


def test_iso_gives_the_right_text_when_seconds_alternate():
    """The date and time of day are cached per second: going back must not reuse them."""
    assert [iso(t) for t in (T0, T0 + 86400.5, T0 + 0.25)] == [
        "2027-01-15T08:00:00.000000Z", "2027-01-16T08:00:00.500000Z",
        "2027-01-15T08:00:00.250000Z"]


@pytest.mark.parametrize("ts", [MIN_TIMESTAMP, datetime(999, 12, 31, 12, tzinfo=UTC).timestamp()])
def test_iso_of_the_earliest_times_jobd_accepts_is_iso_8601(ts):
    text = iso(ts)
    assert text is not None and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
    assert parse_iso(text) == ts


@pytest.mark.parametrize("text,expected", [
    ("2027-01-15T08:00:00Z", T0),
    ("2027-01-15T08:00:00z", T0),
    ("2027-01-15T08:00:00.5Z", T0 + 0.5),
    ("2027-01-15T10:00:00+02:00", T0),
    ("2027-01-15T03:00:00-05:00", T0),
    ("2027-01-15 08:00:00", T0),                     # no offset: UTC, space separator
    ("2027-01-15", T0 - 8 * 3600),                   # a date alone: its midnight, UTC
])
def test_parse_iso_reads_offsets_and_takes_naive_times_as_utc(text, expected):
    assert parse_iso(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2027-13-01T00:00:00Z", "2027-01-15T08:00:00ZZ"])
def test_parse_iso_refuses_what_is_not_iso_8601(text):
    with pytest.raises(ValueError):
        parse_iso(text)


def test_iso_and_parse_iso_round_trip_to_the_microsecond():
    for ts in (0.0, T0 + 0.123456, MAX_TIMESTAMP, -86400.75):
        text = iso(ts)
        assert text is not None
        assert abs(parse_iso(text) - ts) < 1e-6
