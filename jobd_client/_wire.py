"""Framing of the JSON-lines protocol (SPEC §5): one JSON object per `\\n`-ended line.

Pure functions only, so the sync and async clients frame bytes identically.
"""
from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional for the client
    orjson = None  # type: ignore[assignment]

# Replies carry results of many MB; the asyncio reader refuses longer lines.
MAX_LINE_BYTES = 256 * 1024 * 1024
NEWLINE = b"\n"


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as a line; JSON never contains a raw newline."""
    if orjson is not None:
        return orjson.dumps(message) + NEWLINE
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + NEWLINE


def decode(line: bytes) -> dict[str, Any] | None:
    """Parse one line; None for garbage or non-objects, which no caller can route."""
    try:
        value = orjson.loads(line) if orjson is not None else json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
