"""Framing of the JSON-lines protocol (docs/protocol.md): one JSON object per `\\n`-ended line.

Pure functions only, so the sync and async clients frame bytes identically.
What goes out is JSON and nothing else, byte for byte the same whether or not
orjson is importable: every message is walked once before it is encoded, and
anything the two encoders would treat differently (orjson writes a datetime as
a string and NaN as null; `json` writes NaN bare and turns int keys into
strings) is refused with a TypeError naming where it was (`args[0]`,
`kwargs.when`, `jobs[2].tags.x`) before a byte is sent.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional for the client
    orjson = None  # type: ignore[assignment]

# Replies carry results of many MB; the asyncio reader refuses longer lines.
MAX_LINE_BYTES = 256 * 1024 * 1024
NEWLINE = b"\n"
# orjson refuses to write deeper nesting (containers, the message itself
# counted); the walk refuses it first, so both paths say the same thing.
MAX_DEPTH = 254
# The integers the daemon's decoder (orjson) reads exactly; it reads larger
# ones as floats, a silent change.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
# Python's repr writes floats outside [1e-4, 1e16) with an exponent as
# `1e-05` / `1e+16`, orjson as `1e-5` / `1e16`; between them the two agree.
# A message holding such a float is written by `json` on both paths.
EXP_LOW, EXP_HIGH = 1e-4, 1e16
ALLOWED = "send dict with str keys, list, tuple, str, int, finite float, bool or None"
_PLAIN = frozenset((str, bool, type(None)))   # always fine, nothing to look at


class _NotJson(Exception):
    """A refused value: why, and where (path segments, innermost first, added while unwinding)."""

    def __init__(self, why: str, field_only: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.where: list[str] = []
        self.field_only = field_only      # name the top-level field, not a 254-step path

    def path(self) -> str:
        steps = self.where[-1:] if self.field_only else reversed(self.where)
        return "".join(steps).removeprefix(".")


def check_json(message: dict[str, Any]) -> bool:
    """Raise TypeError naming the place unless `message` holds JSON values only.

    Returns True when it holds a float with an exponent (written by `json`).
    """
    try:
        return _dict(message, 1)
    except _NotJson as exc:
        raise TypeError(f"{exc.path()}: {exc.why}") from None


def _dict(d: dict[Any, Any], depth: int) -> bool:
    if depth > MAX_DEPTH:
        raise _too_deep()
    exponent = False
    for key, v in d.items():
        if type(key) is not str and not isinstance(key, str):
            raise _NotJson(f"key {key!r} is not a str; JSON object keys are strings")
        t = type(v)
        if t in _PLAIN or (t is int and INT_MIN <= v <= INT_MAX):
            continue                          # the common flat case: no call
        try:
            exponent |= _value(v, t, depth)
        except _NotJson as exc:
            exc.where.append(f".{key}")
            raise
    return exponent


def _items(items: list[Any] | tuple[Any, ...], depth: int) -> bool:
    if depth > MAX_DEPTH:
        raise _too_deep()
    exponent = False
    for i, v in enumerate(items):
        t = type(v)
        if t in _PLAIN or (t is int and INT_MIN <= v <= INT_MAX):
            continue
        try:
            exponent |= _value(v, t, depth)
        except _NotJson as exc:
            exc.where.append(f"[{i}]")
            raise
    return exponent


def _value(v: Any, t: type, depth: int) -> bool:
    """One value (of type `t`) inside a container at `depth`, not a plain scalar."""
    if t is dict:
        return _dict(v, depth + 1)
    if t is list or t is tuple:
        return _items(v, depth + 1)
    if t is float:
        return _float(v)
    return _subclass(v, depth)


def _subclass(v: Any, depth: int) -> bool:
    """Subclasses of str, int, list and dict (an IntEnum, an OrderedDict) count as
    their base: both encoders write them so. float and tuple subclasses
    (numpy.float64, a namedtuple) do not: orjson refuses what `json` writes."""
    if isinstance(v, str):
        return False
    if isinstance(v, int):              # bool never gets here; a big int does
        if not INT_MIN <= v <= INT_MAX:
            raise _NotJson(f"an int of {v.bit_length()} bits is outside -2**63 .. 2**64-1 "
                           "(the daemon would read it as a float); send it as a str")
        return False
    if isinstance(v, list):
        return _items(v, depth + 1)
    if isinstance(v, dict):
        return _dict(v, depth + 1)
    raise _NotJson(f"{type(v).__name__} is not a JSON type; {ALLOWED}")


def _float(v: float) -> bool:
    size = abs(v)
    if EXP_LOW <= size < EXP_HIGH or size == 0.0:
        return False
    if v != v or size == float("inf"):
        raise _NotJson(f"{v!r} is not a JSON number (NaN and Infinity cannot be sent)")
    return True


def _too_deep() -> _NotJson:
    return _NotJson(f"is nested more than {MAX_DEPTH} levels deep", field_only=True)


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as a line; JSON never contains a raw newline.

    Raises TypeError, naming where, for anything but JSON values.
    """
    exponent = check_json(message)
    try:
        if orjson is not None and not exponent:
            return orjson.dumps(message) + NEWLINE
        return _json_dumps(message) + NEWLINE
    except (TypeError, UnicodeEncodeError) as exc:  # the one thing left: a lone surrogate
        found = next(_unencodable(message, ""), None)
        if found is None:
            raise
        where, what = found
        raise TypeError(f"{where}: {what} is not valid UTF-8 (it holds a lone surrogate)") from exc


def _json_dumps(message: dict[str, Any]) -> bytes:
    # check_circular off: the walk already bounded the depth.
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      check_circular=False)
    return text.encode()


def _unencodable(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(where, what) for each string UTF-8 cannot encode, keys too; only run after a failure."""
    if isinstance(value, str):
        if not _utf8(value):
            yield path, "str"
    elif isinstance(value, dict):
        for key, v in value.items():
            if not _utf8(key):
                yield path or "message", f"key {key!r}"
            yield from _unencodable(v, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _unencodable(v, f"{path}[{i}]")


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def decode(line: bytes) -> dict[str, Any] | None:
    """Parse one line; None for garbage or non-objects, which no caller can route."""
    try:
        value = orjson.loads(line) if orjson is not None else json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
