"""Cron expressions: parsing and the next fire time. Pure: no I/O, no clock.

`parse(expr, timezone)` returns a `Cron`; `Cron.next_fire(after)` is the first
fire time strictly after `after` (epoch seconds). See docs/schedules.md.

- 5 fields `minute hour day-of-month month day-of-week`, or 6 with seconds
  first; `*`, lists, ranges, steps (`*/5`, `1-10/2`, `5/15` = `5-max/15`),
  month and weekday names (case-insensitive), 0 and 7 = Sunday, and the
  macros in `MACROS`.
- Vixie day rule: when both day fields are restricted (neither starts with
  `*`) a day matches if EITHER matches; otherwise both must.
- Time zones: the fields are wall-clock time in the zone. A wall time that
  does not exist (DST gap) is skipped for that day; one that occurs twice
  (DST fold) fires once, at its first occurrence.

The search jumps field by field (month → day → hour → minute → second), so
a yearly expression costs a handful of steps, not a scan of seconds. It is
bounded: `SEARCH_YEARS` without a match raises `CronError` ("never fires").
"""
from __future__ import annotations

import bisect
import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = {n: i for i, n in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
DAY_NAMES = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# Longest possible month, for the parse-time "never fires" check (Feb: leap years).
MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# A Gregorian calendar repeats every 400 years: a day rule that matches no day
# in 401 years never will.
SEARCH_YEARS = 401
MAX_EXPR = 256
MAX_ZONE = 128
LAST_YEAR = 9999        # datetime's limit


class CronError(ValueError):
    """A bad expression or time zone, or one that never fires. The message says why."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: dict[str, int] | None = None


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, MONTH_NAMES)
_DOW = _Field("day-of-week", 0, 7, DAY_NAMES)
_FIVE = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)


# --- parsing -------------------------------------------------------------------------

def parse(expr: str, timezone: str = "UTC") -> Cron:
    """A `Cron` for `expr` in `timezone`; raises CronError naming what is wrong."""
    if not isinstance(expr, str) or not expr.strip() or len(expr) > MAX_EXPR:
        raise CronError(f"must be a non-empty string of at most {MAX_EXPR} characters")
    tz = load_zone(timezone)
    fields = _expand_macro(expr.strip()).split()
    if len(fields) == 5:
        fields.insert(0, "0")
    elif len(fields) != 6:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week) "
                        f"or 6 (with seconds first), got {len(fields)} in {expr!r}")
    sec, minute, hour, dom, month, dow = (
        _parse_field(text, spec) for text, spec in zip(fields, (_SECOND, *_FIVE)))
    dow = tuple(sorted({d % 7 for d in dow}))
    cron = Cron(expr.strip(), timezone, tz, sec, minute, hour, dom, month, dow,
                fields[3].startswith("*"), fields[5].startswith("*"))
    cron.check_possible()
    return cron


def load_zone(name: str) -> tzinfo:
    """A zoneinfo time zone; "UTC" works even without a tz database."""
    if not isinstance(name, str) or not name or len(name) > MAX_ZONE:
        raise CronError(f"must be an IANA time zone name such as 'Europe/Berlin', got {name!r}")
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        raise CronError(f"unknown time zone {name!r}") from None


def _expand_macro(expr: str) -> str:
    if not expr.startswith("@"):
        return expr
    macro = MACROS.get(expr.lower())
    if macro is None:
        raise CronError(f"unknown macro {expr!r} (known: {', '.join(MACROS)})")
    return macro


def _parse_field(text: str, spec: _Field) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, spec))
    return tuple(sorted(values))


def _parse_item(item: str, spec: _Field) -> range:
    base, slash, step_text = item.partition("/")
    step = _step(step_text, spec) if slash else 1
    if base == "*":
        return range(spec.lo, spec.hi + 1, step)
    first, dash, last = base.partition("-")
    lo = _value(first, spec)
    hi = _value(last, spec) if dash else (spec.hi if slash else lo)
    if lo > hi:
        raise CronError(f"{spec.name} field: range {base!r} is backwards")
    return range(lo, hi + 1, step)


def _step(text: str, spec: _Field) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise CronError(f"{spec.name} field: step must be a positive integer, got {text!r}")
    return int(text)


def _value(text: str, spec: _Field) -> int:
    lowered = text.lower()
    if spec.names and lowered in spec.names:
        return spec.names[lowered]
    if not (text.isascii() and text.isdigit()):
        what = f"a number {spec.lo}-{spec.hi}" + (" or a name" if spec.names else "")
        raise CronError(f"{spec.name} field: {text!r} is not {what}")
    value = int(text)
    if not spec.lo <= value <= spec.hi:
        raise CronError(f"{spec.name} field: {value} is out of range {spec.lo}-{spec.hi}")
    return value


def _ceil(values: tuple[int, ...], x: int) -> int | None:
    """The smallest of the sorted `values` that is >= x, or None."""
    i = bisect.bisect_left(values, x)
    return values[i] if i < len(values) else None


# --- the expression ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression: the sorted allowed values of each field (Sunday = 0)."""

    expr: str
    timezone: str
    tz: tzinfo
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    dom_star: bool          # day-of-month starts with `*`: not a restriction (Vixie)
    dow_star: bool

    def check_possible(self) -> None:
        """Refuse day-of-month/month pairs that never occur, such as `30 2`."""
        if self.dom_star or not self.dow_star:
            return      # every month has day 1, or (both restricted) any weekday will do
        if not any(self.days[0] <= MAX_DAYS[m - 1] for m in self.months):
            names = ",".join(calendar.month_abbr[m].lower() for m in self.months)
            raise CronError(f"never fires: day-of-month {self.days[0]} does not occur in {names}")

    def day_matches(self, y: int, m: int, d: int) -> bool:
        dom = d in self.days
        dow = (calendar.weekday(y, m, d) + 1) % 7 in self.weekdays
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def matches(self, wall: datetime) -> bool:
        """Whether a wall-clock time (in this zone) is one of the expression's."""
        return (wall.second in self.seconds and wall.minute in self.minutes
                and wall.hour in self.hours and wall.month in self.months
                and self.day_matches(wall.year, wall.month, wall.day))

    def next_fire(self, after: float) -> float:
        """The first fire time strictly after `after` (epoch seconds), as epoch seconds."""
        start = math.floor(after) + 1
        wall = datetime.fromtimestamp(start, self.tz).replace(tzinfo=None)
        limit = min(wall.year + SEARCH_YEARS, LAST_YEAR)
        while True:
            found = self.next_wall(wall, limit)
            if found is None:
                raise CronError(f"never fires: no time matches {self.expr!r} after "
                                f"{wall.isoformat()} in {self.timezone}")
            ts = self._instant(found)
            if ts is not None and ts > after:
                return ts
            # A DST gap (no such instant) or the first occurrence of a fold
            # already passed: try the next wall time.
            if found.year >= LAST_YEAR:
                raise CronError(f"never fires: no time matches {self.expr!r} before {LAST_YEAR}")
            wall = found + timedelta(seconds=1)

    def _instant(self, wall: datetime) -> float | None:
        """Epoch seconds of a wall time: the first occurrence in a fold, None in a gap."""
        if self.tz is UTC:
            return float(calendar.timegm(wall.timetuple()))
        ts = wall.replace(tzinfo=self.tz, fold=0).timestamp()
        back = datetime.fromtimestamp(ts, self.tz).replace(tzinfo=None)
        return ts if back == wall else None

    def next_wall(self, wall: datetime, limit: int) -> datetime | None:
        """The first matching wall time >= `wall`, searching through year `limit`."""
        y, mo, d, h, mi, s = wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second
        while y <= limit:
            if mo not in self.months:
                nxt = _ceil(self.months, mo)
                y, mo = (y, nxt) if nxt is not None else (y + 1, self.months[0])
                d, h, mi, s = 1, 0, 0, 0
            elif d > calendar.monthrange(y, mo)[1] or not self.day_matches(y, mo, d):
                y, mo, d, h, mi, s = _next_day(y, mo, d)
            else:
                step = self._time_of_day(h, mi, s)
                if step is None:
                    y, mo, d, h, mi, s = _next_day(y, mo, d)
                else:
                    h, mi, s = step
                    return datetime(y, mo, d, h, mi, s)
        return None

    def _time_of_day(self, h: int, mi: int, s: int) -> tuple[int, int, int] | None:
        """The first matching (hour, minute, second) >= the given one on the same day."""
        while h < 24:
            if h not in self.hours:
                nxt = _ceil(self.hours, h)
                if nxt is None:
                    return None
                h, mi, s = nxt, 0, 0
            nm = _ceil(self.minutes, mi)
            if nm is None:
                h, mi, s = h + 1, 0, 0
                continue
            if nm != mi:
                mi, s = nm, 0
            ns = _ceil(self.seconds, s)
            if ns is None:
                mi, s = mi + 1, 0
                continue
            return h, mi, ns
        return None


def _next_day(y: int, mo: int, d: int) -> tuple[int, int, int, int, int, int]:
    """Midnight of the day after (y, mo, d); an overflowing d rolls the month."""
    if d >= calendar.monthrange(y, mo)[1]:
        return (y + 1, 1, 1, 0, 0, 0) if mo == 12 else (y, mo + 1, 1, 0, 0, 0)
    return y, mo, d + 1, 0, 0, 0
