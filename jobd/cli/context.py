"""What every command receives: the client, the output mode and the streams."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from jobd_client import Client

from .tables import terminal_width, to_json


@dataclass
class Context:
    """One CLI invocation. `json` selects machine output (`--json`)."""

    client: Client
    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    inp: TextIO = field(default_factory=lambda: sys.stdin)

    @property
    def socket_path(self) -> str:
        """The socket the client uses (found by the client's lookup unless given)."""
        return self.client.socket_path

    @property
    def width(self) -> int:
        return terminal_width(self.out)

    @property
    def tty(self) -> bool:
        try:
            return self.out.isatty()
        except (AttributeError, ValueError):
            return False

    def emit(self, value: Any) -> None:
        """Print one JSON document."""
        self.out.write(to_json(value) + "\n")

    def lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.out.write(line + "\n")

    def say(self, line: str) -> None:
        self.out.write(line + "\n")

    def warn(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()

    def note(self, line: str) -> None:
        """A remark for a person (a failed job's error, a timeout); --json output
        already says the same in its fields, so it stays quiet there."""
        if not self.json:
            self.warn(line)

    def fail(self, code: str, message: str, status: int, line: str | None = None) -> int:
        """Report an error and return `status`: with --json as a document on stdout
        (a script reads one stream), else `line` (default `error: <message>`) on stderr."""
        if self.json:
            self.out.write(error_document(code, message) + "\n")
            self.out.flush()
        else:
            self.warn(line or f"error: {message}")
        return status


def error_document(code: str, message: str) -> str:
    """`{"ok": false, "error": {...}}`: the shape of the daemon's own error replies."""
    return to_json({"ok": False, "error": {"code": code, "message": message}})
