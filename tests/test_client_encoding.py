"""The client sends JSON values only, and the same bytes with or without orjson.

Each case runs twice: with orjson, and with `_wire.orjson` set to None (the
standard-library path a client without orjson takes). A subprocess that cannot
import orjson at all checks that the import fallback says the same.
"""
from __future__ import annotations

import collections
import datetime
import decimal
import enum
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_client_unit import FakeDaemon

from jobd_client import AsyncClient, Client, _wire

ROOT = Path(__file__).parent.parent
WAIT_S = 10.0


class Colour(enum.IntEnum):
    RED = 1


class Point(tuple[int, int]):
    """A tuple subclass, as a namedtuple is: orjson refuses it, `json` writes it."""


class Real(float):
    """A float subclass, as numpy.float64 is."""


def nest(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def submit(**fields: Any) -> dict[str, Any]:
    return {"op": "submit", "id": 1, "handler": "h", **fields}


def encode_both(message: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What `encode` gives (bytes, or the TypeError's text) with and without orjson."""
    out: list[Any] = []
    for module in (orjson, None):
        monkeypatch.setattr(_wire, "orjson", module)
        try:
            out.append(_wire.encode(message))
        except TypeError as exc:
            out.append(("TypeError", str(exc)))
    return out


# message, the start of the TypeError's text: the place, then why
REFUSED = [
    (submit(args=[datetime.datetime(2026, 1, 1)]), "args[0]: datetime is not a JSON type"),
    (submit(kwargs={"when": datetime.date(2026, 1, 1)}), "kwargs.when: date is not a JSON type"),
    (submit(args=[1, float("nan")]), "args[1]: nan is not a JSON number"),
    (submit(kwargs={"x": float("inf")}), "kwargs.x: inf is not a JSON number"),
    (submit(tags={"x": float("-inf")}), "tags.x: -inf is not a JSON number"),
    (submit(tags={"x": {1, 2}}), "tags.x: set is not a JSON type"),
    (submit(args=[b"raw"]), "args[0]: bytes is not a JSON type"),
    (submit(args=[decimal.Decimal("1.5")]), "args[0]: Decimal is not a JSON type"),
    (submit(kwargs={1: "a"}), "kwargs: key 1 is not a str"),
    (submit(kwargs={"a": {(1, 2): "b"}}), "kwargs.a: key (1, 2) is not a str"),
    (submit(args=[{"deep": [0, [datetime.time(1)]]}]), "args[0].deep[1][0]: time is not a JSON type"),
    (submit(args=[2**64]), "args[0]: an int of 65 bits is outside -2**63 .. 2**64-1"),
    (submit(args=[-(2**63) - 1]), "args[0]: an int of 64 bits is outside"),
    (submit(args=[Real(1.5)]), "args[0]: Real is not a JSON type"),
    (submit(args=[Point((1, 2))]), "args[0]: Point is not a JSON type"),
    (submit(args=["ok", "\ud800"]), "args[1]: str is not valid UTF-8"),
    (submit(kwargs={"\udfff": 1}), "kwargs: key '\\udfff' is not valid UTF-8"),
    (submit(args=[nest(_wire.MAX_DEPTH - 1)]), "args: is nested more than 254 levels deep"),
    ({"op": "submit_many", "id": 1, "jobs": [{"handler": "h"}, {"handler": "h", "args": [object()]}]},
     "jobs[1].args[0]: object is not a JSON type"),
    ({"op": "scale", "id": 1, "count": 2.0 + 1j}, "count: complex is not a JSON type"),
]


@pytest.mark.parametrize(("message", "error"), REFUSED, ids=[e.split(":")[0] for _, e in REFUSED])
def test_a_non_json_value_is_refused_the_same_way_on_both_paths(
        message: dict[str, Any], error: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with_orjson, without = encode_both(message, monkeypatch)
    assert with_orjson == without
    assert with_orjson[0] == "TypeError" and with_orjson[1].startswith(error), with_orjson[1]


ACCEPTED = [
    submit(args=["a", 1, -1, 2**64 - 1, -(2**63), True, False, None, 0.5, -0.0]),
    submit(kwargs={"text": "é ✓ \u2028 \x00 \x1f \" \\ \n", "emoji": "\U0001F600"}),
    submit(args=[(1, (2, 3)), [], {}], kwargs={"t": ()}),
    submit(args=[1e-5, 1e16, 1e+300, 5e-324, -1.5e-7, 123456789.125, 9999999999999998.0, 1e-4]),
    submit(args=[Colour.RED], kwargs=collections.OrderedDict(b=1, a=2)),
    submit(args=[collections.defaultdict(list, k=[1])]),
    submit(args=[nest(_wire.MAX_DEPTH - 2)]),   # the deepest a message may nest
]


def test_json_values_give_identical_bytes_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    for message in ACCEPTED:
        with_orjson, without = encode_both(message, monkeypatch)
        assert isinstance(with_orjson, bytes) and with_orjson == without, message
        assert with_orjson.endswith(b"\n") and with_orjson.count(b"\n") == 1
        assert json.loads(with_orjson) == json.loads(json.dumps(message))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
@example([1e-05, {"big": -1e16}])      # written differently by the two encoders
def test_any_json_value_gives_identical_bytes_on_both_paths(value: Any) -> None:
    message = submit(args=[value])
    saved = _wire.orjson
    try:
        fast = _wire.encode(message)
        _wire.orjson = None
        plain = _wire.encode(message)
    finally:
        _wire.orjson = saved
    assert fast == plain
    assert orjson.loads(fast)["args"] == [orjson.loads(orjson.dumps(value))]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_written_with_an_exponent_are_the_ones_orjson_writes_differently(x: float) -> None:
    """The cheap range test in the walk agrees with Python's repr, which the
    `json` path writes: the two encoders differ exactly on those floats."""
    exponent = _wire.check_json({"x": x})
    assert exponent == ("e" in repr(x))
    if not exponent:
        assert orjson.dumps(x) == repr(x).encode()


# --- nothing is sent -----------------------------------------------------------------------

@pytest.fixture
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDaemon]:
    root = tmp_path_factory.mktemp("enc", numbered=True)
    daemon = FakeDaemon(str(root / "s.sock"))
    yield daemon
    if os.path.exists(daemon.path):
        daemon.stop()


@pytest.mark.parametrize("use_orjson", [True, False])
def test_a_refused_value_sends_nothing_and_the_client_stays_usable(
        fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch, use_orjson: bool) -> None:
    if not use_orjson:
        monkeypatch.setattr(_wire, "orjson", None)
    with Client(fake.path, timeout=WAIT_S) as c:
        with pytest.raises(TypeError, match=r"^kwargs\.when: datetime is not a JSON type"):
            c.submit("h", kwargs={"when": datetime.datetime(2026, 1, 1)})
        with pytest.raises(TypeError, match=r"^jobs\[0\]\.tags\.x: nan is not a JSON number"):
            c.submit_many([{"handler": "h", "tags": {"x": math.nan}}])
        with pytest.raises(TypeError, match=r"^events\[0\]: set is not a JSON type"):
            c.watch(events=[set()])
        assert fake.requests == []
        job_id = c.submit("h", args=[1.5e-7])
    assert fake.ops("submit")[0]["args"] == [1.5e-7] and list(fake.jobs) == [job_id]
    assert fake.accepted == 1                       # the watch never connected


async def test_async_a_refused_value_sends_nothing(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        with pytest.raises(TypeError, match=r"^args\[0\]: date is not a JSON type"):
            await c.submit("h", args=[datetime.date(2026, 1, 1)])
        with pytest.raises(TypeError, match=r"^job_id: bytes is not a JSON type"):
            c.watch(job_id=b"x")  # type: ignore[arg-type]
        assert fake.requests == []
        assert (await c.hello())["protocol"] == 1


# --- without orjson installed ----------------------------------------------------------------

PROBE = textwrap.dedent("""
    import datetime, sys
    sys.modules["orjson"] = None          # as if it were not installed
    from jobd_client import _wire
    assert _wire.orjson is None
    print(_wire.encode({"op": "submit", "id": 1, "args": [1e-05, "é", (1, 2)], "kwargs": {"a": None}}))
    for bad in ([datetime.datetime(2026, 1, 1)], [float("nan")], [{1: 2}]):
        try:
            _wire.encode({"op": "submit", "id": 1, "args": bad})
        except TypeError as exc:
            print(exc)
""")


def test_without_orjson_importable_the_client_encodes_and_refuses_alike() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, timeout=60, check=True)
    lines = run.stdout.splitlines()
    message = {"op": "submit", "id": 1, "args": [1e-05, "é", (1, 2)], "kwargs": {"a": None}}
    assert lines[0] == repr(_wire.encode(message))
    expected = []
    for bad in ([datetime.datetime(2026, 1, 1)], [float("nan")], [{1: 2}]):
        with pytest.raises(TypeError) as info:
            _wire.encode({"op": "submit", "id": 1, "args": bad})
        expected.append(str(info.value))
    assert lines[1:] == expected
    assert expected[0].startswith("args[0]: datetime") and expected[2].startswith("args[0]: key 1")
