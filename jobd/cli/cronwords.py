"""Cron expressions in words, for `schedule add` to echo (pure).

`describe("0 3 * * *")` is "at 03:00 every day"; `describe("0 3 * * * *")`
(six fields: seconds first) is "at minute 3 of every hour", which makes the
extra field's meaning visible before the schedule fires at the wrong times.

The expression is read by the daemon's own parser (`jobd.scheduling.cron`),
so every syntax it accepts (lists, ranges, steps, names, macros) reduces to
sets of values; the common shapes of those sets get a phrase, and anything
else falls back to the raw fields, named (`describe` never guesses).
"""
from __future__ import annotations

from collections.abc import Sequence

from jobd.scheduling.cron import Cron, CronError, parse

FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
AT_MOST_TIMES = 6          # "at 09:00, 12:00 and 17:00"; more reads better as fields
# Spelled out here, not taken from `calendar`, whose names follow the locale.
DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTH_NAMES = ("", "January", "February", "March", "April", "May", "June", "July",
               "August", "September", "October", "November", "December")
Values = tuple[int, ...]


def describe(expr: str) -> str:
    """The expression in words, or its fields named when no phrase fits it."""
    try:
        cron = parse(expr)
    except CronError:
        return raw_fields(expr)
    time, periodic = _time_phrase(cron)
    days = _day_phrase(cron)
    if time is None or days is None:
        return raw_fields(expr)
    if periodic:
        return time if days == "every day" else f"{time}, {days}"
    return f"{time} {days}"


def raw_fields(expr: str) -> str:
    """`minute 1-10/3, hour 4,7, ...`: each field with its name."""
    fields = expr.split()
    names = FIELD_NAMES[1:] if len(fields) == 5 else FIELD_NAMES
    if len(fields) not in (5, 6):
        return f"cron {expr!r}"
    return ", ".join(f"{name} {text}" for name, text in zip(names, fields, strict=True))


# --- value sets ---------------------------------------------------------------------------

def _is_all(values: Values, lo: int, hi: int) -> bool:
    return values == tuple(range(lo, hi + 1))


def _step(values: Values, lo: int, hi: int) -> int | None:
    """n when the values are every n-th from `lo` (n >= 2), as `*/n` gives."""
    if len(values) < 2 or values[0] != lo:
        return None
    n = values[1] - values[0]
    return n if n > 1 and values == tuple(range(lo, hi + 1, n)) else None


def _span(values: Values) -> tuple[int, int] | None:
    """(first, last) when the values are one run without gaps, as `a-b` gives."""
    if len(values) > 1 and values == tuple(range(values[0], values[-1] + 1)):
        return values[0], values[-1]
    return None


def _join(words: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _every(n: int, unit: str) -> str:
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


# --- time of day -------------------------------------------------------------------------

def _time_phrase(cron: Cron) -> tuple[str | None, bool]:
    """(phrase, periodic): "at 03:00" (not periodic) or "every 10 minutes" (periodic)."""
    s, m, h = cron.seconds, cron.minutes, cron.hours
    every_hour, every_minute = _is_all(h, 0, 23), _is_all(m, 0, 59)
    if len(s) == 1 and len(m) * len(h) <= AT_MOST_TIMES:
        clock = "%02d:%02d" if s == (0,) else "%02d:%02d:" + f"{s[0]:02d}"
        return "at " + _join([clock % (hh, mm) for hh in h for mm in m]), False
    if s == (0,):
        return _minutes_phrase(m, h, every_hour, every_minute), True
    if every_minute and every_hour:
        return _seconds_phrase(s), True
    if len(s) == 1 and len(m) == 1 and every_hour:
        return f"at minute {m[0]}, second {s[0]} of every hour", True
    return None, True


def _seconds_phrase(s: Values) -> str | None:
    if _is_all(s, 0, 59):
        return "every second"
    step = _step(s, 0, 59)
    if step is not None:
        return _every(step, "second")
    return f"at second {s[0]} of every minute" if len(s) == 1 else None


def _minutes_phrase(m: Values, h: Values, every_hour: bool, every_minute: bool) -> str | None:
    """Fires at second 0 of the minutes `m` in the hours `h` (not a few times a day)."""
    if len(m) == 1:
        hours = _hours_phrase(h)
        return None if hours is None else f"at minute {m[0]} of {hours}"
    step = 1 if every_minute else _step(m, 0, 59)
    if step is None:
        return None
    minutes = _every(step, "minute")
    if every_hour:
        return minutes
    span = _span(h) or ((h[0], h[0]) if len(h) == 1 else None)
    if span is None:
        return None
    return f"{minutes} from {span[0]:02d}:00 to {span[1]:02d}:59"


def _hours_phrase(h: Values) -> str | None:
    if _is_all(h, 0, 23):
        return "every hour"
    step = _step(h, 0, 23)
    if step is not None:
        return f"every {step} hours"
    span = _span(h)
    if span is not None:
        return f"every hour from {span[0]:02d}:00 to {span[1]:02d}:00"
    return None


# --- days ---------------------------------------------------------------------------------

def _day_phrase(cron: Cron) -> str | None:
    """"every day", "on Monday to Friday", "on day 1 of every month", "on 1 January", ..."""
    months = None if _is_all(cron.months, 1, 12) else _months_words(cron.months)
    if cron.dom_star and cron.dow_star:
        return "every day" if months is None else f"every day in {months}"
    weekdays = None if cron.dow_star else "on " + _weekdays_words(cron.weekdays)
    monthdays = None if cron.dom_star else _monthdays_words(cron.days, cron.months, months)
    if weekdays and monthdays:       # both restricted: cron fires on either (Vixie rule)
        in_months = "" if months is None else f" in {months}"
        return f"{monthdays} or {weekdays}{in_months}"
    if weekdays:
        return weekdays if months is None else f"{weekdays} in {months}"
    return monthdays


def _monthdays_words(days: Values, month_values: Values, months: str | None) -> str:
    if len(days) == 1 and len(month_values) == 1:
        return f"on {days[0]} {months}"            # "on 1 January"
    span = _span(days)
    numbers = f"{span[0]} to {span[1]}" if span and len(days) > 2 else _join([str(d) for d in days])
    label = "day" if len(days) == 1 else "days"
    return f"on {label} {numbers} of {'every month' if months is None else months}"


def _months_words(months: Values) -> str:
    span = _span(months)
    if span is not None and len(months) > 2:
        return f"{MONTH_NAMES[span[0]]} to {MONTH_NAMES[span[1]]}"
    return _join([MONTH_NAMES[m] for m in months])


def _weekdays_words(days: Values) -> str:
    if days == (1, 2, 3, 4, 5):
        return "Monday to Friday"
    if days == (0, 6):
        return "Saturday and Sunday"
    span = _span(days)
    if span is not None and len(days) > 2:
        return f"{DAY_NAMES[span[0]]} to {DAY_NAMES[span[1]]}"
    return _join([DAY_NAMES[d] for d in days])
