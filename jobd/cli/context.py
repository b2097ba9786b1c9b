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
    """One CLI invocation. `json` selects machine output (SPEC §8 `--json`)."""

    client: Client
    socket_path: str
    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    inp: TextIO = field(default_factory=lambda: sys.stdin)

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
