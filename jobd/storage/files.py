"""Files the daemon writes: private modes, whole writes, durable names (pure I/O helpers).

Every file jobd creates is 0600 in a 0700 directory. A write either writes
everything or raises; a rename or a new file is followed by an fsync of its
directory, so the name survives a power cut too. Interrupted writes leave
`*.tmp` files only, removed at the next start.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger("jobd.files")

FILE_MODE = 0o600


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)


def write_all(fd: int, data: bytes | bytearray) -> None:
    # No memoryview: one left exported by a failed write would make the
    # bytearray impossible to clear. A partial write (rare) slices a copy.
    n = os.write(fd, data)
    while n < len(data):
        n += os.write(fd, data[n:])


def remove_temp_files(directory: str) -> None:
    """Delete `*.tmp` files: written by an operation a crash cut short, never
    renamed into place, so nothing refers to them."""
    for entry in os.scandir(directory):
        if entry.name.endswith(".tmp") and entry.is_file():
            os.unlink(entry.path)
            log.info("removed %s, left by an interrupted write", entry.path)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def remove_unreferenced(directory: str, keep: Callable[[str], bool]) -> int:
    """Delete the files of `directory` whose stem (the name up to its first
    dot: a job's file stem) `keep` refuses; how many went."""
    removed = 0
    for entry in os.scandir(directory):
        if not keep(entry.name.split(".", 1)[0]):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def replace_file(path: str, data: bytes) -> None:
    """Make `path` hold `data`, all or nothing: a `.tmp` beside it written and
    fsynced, renamed over it, the directory fsynced."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")
