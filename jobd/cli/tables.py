"""Pure text formatting for jobd-cli: tables, key/value blocks, times, sizes.

Nothing here does I/O, so every layout is testable on plain strings. Tables
fit a given width by shrinking one flexible column; job ids are never
shortened, because an operator copies them into the next command.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

DEFAULT_WIDTH = 80
GAP = " "
MIN_FLEX = 8


def terminal_width(stream: TextIO | None = None) -> int:
    """The terminal's columns, or 80 when output is not a terminal (pipes, files)."""
    if stream is not None and not _isatty(stream):
        return DEFAULT_WIDTH
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def unicode_ok(stream: TextIO) -> bool:
    """True when the stream can print box and ellipsis characters."""
    return (getattr(stream, "encoding", None) or "").lower().replace("-", "").startswith("utf")


def ellipsis(stream: TextIO) -> str:
    return "…" if unicode_ok(stream) else "~"


# --- truncation ------------------------------------------------------------------------

def clip(text: str, width: int, mark: str = "~") -> str:
    """Cut `text` to `width` columns, ending with `mark` when cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - len(mark))] + mark if width > len(mark) else text[:width]


def dotted_forms(name: str, mark: str = "~") -> list[str]:
    """Ever shorter spellings of a dotted handler name, each cut only at a dot.

    `myapp.tasks.reports.build` → `m.tasks.reports.build` → `m.t.reports.build`
    → `m.t.r.build` → `~t.r.build` → `~r.build` → `~build`. The module path
    gives way, first to initials, then from the left; the function name (the
    last part) stays whole, because a name cut mid-word is one an operator
    cannot type back.
    """
    *path, last = name.split(".")
    forms = [name]
    for i, part in enumerate(path):
        if len(part) > 1:
            path = [*path[:i], part[0], *path[i + 1:]]
            forms.append(".".join([*path, last]))
    forms += [mark + ".".join([*path[i:], last]) for i in range(1, len(path) + 1)]
    return forms


def shorten_dotted(name: str, width: int, mark: str = "~") -> str:
    """The longest of `dotted_forms` that fits `width`; the shortest if none does."""
    forms = dotted_forms(name, mark)
    return next((form for form in forms if len(form) <= width), forms[-1])


def first_line(text: Any) -> str:
    """The first line of an error (its message; the traceback follows)."""
    lines = "" if text is None else str(text).strip().splitlines()
    return lines[0] if lines else ""


# --- tables ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Column:
    """One table column; `flex` columns shrink to fit. A `dotted` column holds
    handler names and shortens them at dots only (`shorten_dotted`)."""

    title: str
    right: bool = False
    flex: bool = False
    dotted: bool = False


def table(columns: Sequence[Column], rows: Sequence[Sequence[Any]], width: int,
          mark: str = "~") -> list[str]:
    """Render rows under a header, at most `width` columns wide (the flex column gives way)."""
    cells = [[str(c.title) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    floors = [_floor(col, [row[i] for row in cells], widths[i], mark)
              for i, col in enumerate(columns)]
    _fit(widths, floors, width)
    return [_line(columns, widths, row, mark) for row in cells]


def _floor(column: Column, cells: list[str], width: int, mark: str) -> int:
    """The narrowest a column may become: fixed columns keep their width; a
    dotted one is as wide as its longest whole function name (with the mark)."""
    if not column.flex:
        return width
    if column.dotted:
        return max(len(dotted_forms(cell, mark)[-1]) for cell in cells)
    return min(width, MIN_FLEX)


def _fit(widths: list[int], floors: list[int], width: int) -> None:
    """Shrink the widest shrinkable column one step at a time, so they share the cut."""
    excess = sum(widths) + len(GAP) * (len(widths) - 1) - width
    while excess > 0:
        shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
        if not shrinkable:
            return
        widths[max(shrinkable, key=lambda i: widths[i])] -= 1
        excess -= 1


def _line(columns: Sequence[Column], widths: list[int], row: Sequence[str], mark: str) -> str:
    parts = []
    for col, w, text in zip(columns, widths, row, strict=True):
        text = shorten_dotted(text, w, mark) if col.dotted else clip(text, w, mark)
        parts.append(text.rjust(w) if col.right else text.ljust(w))
    return GAP.join(parts).rstrip()


def key_values(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    """`key  value` lines, keys aligned; multi-line values are indented under the value."""
    pad = max((len(k) for k, _ in pairs), default=0) + 2
    out = []
    for key, value in pairs:
        lines = str(value).splitlines() or [""]
        out.append(f"{key:<{pad}}{lines[0]}".rstrip())
        out.extend(" " * pad + line for line in lines[1:])
    return out


# --- values ------------------------------------------------------------------------------

def to_json(value: Any, pretty: bool = True) -> str:
    """JSON for output; non-JSON values (should not happen) become strings."""
    if pretty:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def fitting_json(value: Any, width: int) -> str:
    """One line when it fits `width`, else indented."""
    line = to_json(value, pretty=False)
    return line if len(line) <= width else to_json(value)


def compact_json(value: Any) -> str:
    """A one-line JSON rendering for table cells and summaries."""
    return to_json(value, pretty=False)


def parse_iso(text: str | None) -> datetime | None:
    """Parse the daemon's ISO 8601 UTC timestamps (`...Z`); None when absent or malformed."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def short_time(text: str | None, now: datetime | None = None) -> str:
    """A timestamp for a table cell, in local time: `HH:MM:SS` when it is today,
    `MM-DD HH:MM` in this year, `YYYY-MM-DD HH:MM` otherwise (a yearly
    schedule's next run, a job kept since last December), so a date is never
    mistaken for one of the current year."""
    when = parse_iso(text)
    if when is None:
        return "-"
    local = when.astimezone()
    today = (now or datetime.now(UTC)).astimezone().date()
    if local.date() == today:
        return local.strftime("%H:%M:%S")
    return local.strftime("%m-%d %H:%M" if local.year == today.year else "%Y-%m-%d %H:%M")


def clock_time(text: str | None) -> str:
    """Local `HH:MM:SS.mmm` for event lines."""
    when = parse_iso(text)
    if when is None:
        return "--:--:--.---"
    return when.astimezone().strftime("%H:%M:%S.%f")[:-3]


def duration(seconds: float | None) -> str:
    """`0.42s`, `12.3s`, `4m05s`, `2h03m`, `3d04h`."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def clock(seconds: float) -> str:
    """Elapsed time as `M:SS` (or `H:MM:SS`), for progress lines."""
    minutes, secs = divmod(int(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def megabytes(size: Any) -> str:
    return "-" if not isinstance(size, (int, float)) else f"{size / (1024 * 1024):.1f}"


def byte_size(size: Any) -> str:
    """`512 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`."""
    if not isinstance(size, (int, float)):
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def rate(value: Any) -> str:
    """Jobs per second with sensible precision."""
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.0f}/s" if value >= 100 else f"{value:.2f}/s"


def progress_text(progress: dict[str, Any] | None) -> str:
    """`3/10 (30%) resizing`, `3 resizing` without a total, `-` without progress."""
    if not progress:
        return "-"
    current, total = progress.get("current"), progress.get("total")
    text = f"{current}/{total}" if total is not None else f"{current}"
    pct = progress.get("percentage")
    if pct is not None:
        text += f" ({pct:.0f}%)"
    message = progress.get("message")
    return f"{text} {message}" if message else text
