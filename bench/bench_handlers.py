"""Handlers used only by the benchmarks (loaded with `--handlers jobd.examples,bench.bench_handlers`)."""
from __future__ import annotations

import os

from jobd import handler


@handler
def touch(path: str) -> None:
    """The reference job of issue 5: append one byte to a file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)


@handler
def blob(size: int) -> str:
    """A result of `size` characters (hex of random bytes: not trivially compressible)."""
    return os.urandom(size // 2 + 1).hex()[:size]
