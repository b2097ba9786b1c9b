"""jobd/core/values.py: the compact JSON a job keeps (nesting room, NaN and
Infinity refused with the path of the value), `non_finite_path`, priorities,
`@handler` options and the range of times a job view can show.

Priority names and bounds are in tests/test_units.py; these add what it lacks.
"""
from __future__ import annotations

import math
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobd import constants as C
from jobd.core.values import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    NESTING_HEADROOM,
    compact_json,
    handler_option,
    in_range,
    non_finite_path,
    priority_value,
)
from jobd.errors import OpError

NAN, INF = float("nan"), float("inf")


def nested(depth: int) -> list[Any]:
    """`depth` levels of lists: [[[...]]]."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def refused(fn: Any, *args: Any) -> str:
    """Call `fn`, expect `invalid_argument`, return its message."""
    with pytest.raises(OpError) as e:
        fn(*args)
    assert e.value.code == C.E_INVALID_ARGUMENT
    return e.value.message


# --- compact_json ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    [1, "two", 3.5, None, True],
    {"a": 1, "b": "x", "c": None},
    list(range(200)),                      # flat but long: the checked path
    [{"a": [1, {"b": [2, 3]}]}, [[[]]], {}],
    {"k": {"nested": ["é", "\u2028", 1e300]}},
])
def test_compact_json_is_orjson_text_flat_or_nested(value):
    data = compact_json("args", value)
    assert data == orjson.dumps(value)
    assert orjson.loads(data) == value


def test_a_null_in_the_value_is_not_mistaken_for_nan():
    assert compact_json("args", [None, "null", {"null": None}]) == b'[null,"null",{"null":null}]'


def test_the_deepest_accepted_value_still_fits_inside_the_daemons_own_wrapping():
    depth = 1
    while True:                            # find the boundary by the interface alone
        try:
            compact_json("args", nested(depth + 1))
        except OpError:
            break
        depth += 1
    deepest = nested(depth)
    wrapped: Any = deepest
    for _ in range(NESTING_HEADROOM):
        wrapped = [wrapped]
    orjson.dumps(wrapped)                  # the room the daemon needs is left
    # and the first refused depth is one orjson alone would still write:
    # the check is jobd's headroom, not orjson's own limit
    orjson.dumps(nested(depth + 1))


@pytest.mark.parametrize("field,value", [
    ("args", [nested(300)]),
    ("kwargs", {"deep": nested(300)}),
    ("args", nested(250)),
])
def test_too_deep_nesting_is_refused_naming_the_field(field, value):
    message = refused(compact_json, field, value)
    assert message == f"{field}: is nested too deeply"


@pytest.mark.parametrize("field,value,where", [
    ("args", [1, {"x": NAN}], "args[1].x"),
    ("args", ["a", INF], "args[1]"),
    ("kwargs", {"k": -INF}, "kwargs.k"),
    ("kwargs", {"a": [1, 2, {"b": [0.5, NAN]}]}, "kwargs.a[2].b[1]"),
    ("args", list(range(100)) + [NAN], "args[100]"),        # long: the checked path
    ("args", [nested(5), {"y": [[INF]]}], "args[1].y[0][0]"),
])
def test_nan_and_infinity_are_refused_with_the_path_of_the_value(field, value, where):
    message = refused(compact_json, field, value)
    assert message == f"{where}: NaN and Infinity are not JSON numbers"


# --- non_finite_path ------------------------------------------------------------------------

@pytest.mark.parametrize("value,path", [
    ([1.0, 2.0], None),
    ({"a": "NaN", "b": None}, None),                 # strings and null are fine
    ([NAN, INF], "[0]"),                             # the first, in document order
    ({"a": 1.0, "b": NAN, "c": INF}, ".b"),
    ({"a": [1, {"b": -INF}]}, ".a[1].b"),
    ((1, (2, NAN)), "[1][1]"),                       # tuples are sequences too
    (NAN, ""),                                       # the value itself: an empty path
    ({"x": {"y": {"z": [[], [INF]]}}}, ".x.y.z[1][0]"),
])
def test_non_finite_path_names_the_first_bad_number(value, path):
    assert non_finite_path(value) == path


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.floats()
json_like = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text("abc", max_size=3), inner, max_size=4),
                         max_leaves=12)


def lookup(value: Any, path: str) -> Any:
    """Follow a path such as `.a[2].b` (keys without `.` or `[`) into `value`."""
    for part in re.findall(r"\.[^.\[]*|\[\d+\]", path):
        value = value[int(part[1:-1])] if part[0] == "[" else value[part[1:]]
    return value


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [value]


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_non_finite_path_points_at_a_non_finite_float_exactly_when_there_is_one(value):
    path = non_finite_path(value)
    assert (path is not None) == any(isinstance(x, float) and not math.isfinite(x)
                                     for x in leaves(value))
    if path is not None:
        found = lookup(value, path)
        assert isinstance(found, float) and not math.isfinite(found)


# --- priority_value -----------------------------------------------------------------------

def test_priority_value_names_the_field_it_was_given():
    message = refused(priority_value, 10.0, "handler.priority")
    assert message.startswith("handler.priority: must be an integer 0..1000")
    assert "low, normal, high, critical" in message


@pytest.mark.parametrize("value", ["LOW", " high", False, [10]])
def test_priority_value_accepts_only_exact_names_and_plain_integers(value):
    refused(priority_value, value)


# --- handler_option ---------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("name", "mod.fn"), ("priority", "critical"), ("priority", 0), ("max_retries", 0),
    ("max_retries", 1000), ("max_concurrency", 1), ("max_concurrency", 500),
    ("retry_delay", 0), ("retry_delay", 2.5), ("max_delay", 0.0), ("retry_backoff", 1.0),
    ("retry_backoff", 3), ("timeout", 0.001), ("jitter", True), ("jitter", False),
])
def test_handler_option_accepts_what_a_submit_would(key, value):
    handler_option(key, value)


@pytest.mark.parametrize("key,value", [
    ("name", ""), ("name", 5), ("priority", 1001), ("priority", "urgent"),
    ("max_retries", -1), ("max_retries", 1001), ("max_retries", 2.0),
    ("max_concurrency", 0),           # "no limit" is leaving it out, never 0
    ("max_concurrency", -1), ("max_concurrency", True), ("max_concurrency", 1.0),
    ("retry_delay", -0.5), ("retry_delay", NAN), ("retry_delay", MAX_TIMESTAMP + 1),
    ("max_delay", INF), ("retry_backoff", 0.99), ("timeout", 0), ("timeout", -1),
    ("jitter", 1), ("jitter", "yes"), ("bogus", 1),
])
def test_handler_option_refuses_a_bad_value_naming_the_key(key, value):
    message = refused(handler_option, key, value)
    assert message.startswith(f"{key}: ")


def test_an_unknown_handler_option_says_so():
    assert refused(handler_option, "retries", 3) == "retries: unknown option"


# --- in_range -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ts", [MIN_TIMESTAMP, 0.0, -1.5, 1.8e9, MAX_TIMESTAMP])
def test_in_range_returns_times_from_year_1_to_9999(ts):
    assert in_range("run_at", ts) == ts


@pytest.mark.parametrize("ts", [MIN_TIMESTAMP - 0.001, MAX_TIMESTAMP + 0.001, INF, -INF])
def test_in_range_refuses_times_outside_naming_the_field(ts):
    assert refused(in_range, "run_at", ts) == "run_at: lands outside the years 1 to 9999 (UTC)"


def test_the_bounds_are_the_first_and_last_second_iso_8601_shows():
    from datetime import UTC, datetime
    assert datetime.fromtimestamp(MIN_TIMESTAMP, UTC) == datetime(1, 1, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(MAX_TIMESTAMP, UTC) == datetime(9999, 12, 31, 23, 59, 59,
                                                                 tzinfo=UTC)
