"""jobd.cron: parsing, next fire times, time zones and DST (pure unit tests).

The property tests compare `next_fire` with a brute-force reference that
walks minute by minute and knows nothing of the parser: the expression text
and the reference's sets of allowed values are generated from the same data.
"""
from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobd.scheduling.cron import CronError, parse


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def fires(expr: str, start: str, n: int = 3, tz: str = "UTC") -> list[str]:
    """The next `n` fire times after `start`, as ISO strings in the schedule's zone."""
    cron = parse(expr, tz)
    t, out = ts(start), []
    for _ in range(n):
        t = cron.next_fire(t)
        out.append(datetime.fromtimestamp(t, cron.tz).isoformat())
    return out


# --- syntax ---------------------------------------------------------------------------

@pytest.mark.parametrize("expr, field, values", [
    ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
    ("1-10/3 * * * *", "minutes", (1, 4, 7, 10)),
    ("5/20 * * * *", "minutes", (5, 25, 45)),
    ("0 1,3,5-6 * * *", "hours", (1, 3, 5, 6)),
    ("0 0 * JAN,mar-May *", "months", (1, 3, 4, 5)),
    ("0 0 * * mon-fri", "weekdays", (1, 2, 3, 4, 5)),
    ("0 0 * * 0,7", "weekdays", (0,)),
    ("0 0 * * 5-7", "weekdays", (0, 5, 6)),
    ("0 0 * * SUN", "weekdays", (0,)),
    ("*/20 0 * * * *", "seconds", (0, 20, 40)),
    ("0 0 * * *", "seconds", (0,)),
])
def test_field_values(expr: str, field: str, values: tuple[int, ...]) -> None:
    assert getattr(parse(expr), field) == values


@pytest.mark.parametrize("macro, same_as", [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"),
])
def test_macros(macro: str, same_as: str) -> None:
    start = "2026-05-17T13:14:15+00:00"
    assert fires(macro, start) == fires(same_as, start)


@pytest.mark.parametrize("expr, words", [
    ("", "non-empty"),
    ("* * *", "expected 5 fields"),
    ("* * * * * * *", "got 7"),
    ("60 * * * *", "minute field: 60 is out of range 0-59"),
    ("* 24 * * *", "hour field: 24"),
    ("* * 0 * *", "day-of-month field: 0"),
    ("* * * 13 *", "month field: 13"),
    ("* * * * 8", "day-of-week field: 8"),
    ("60 * * * * *", "second field"),
    ("*/0 * * * *", "step must be a positive integer"),
    ("*/x * * * *", "step must be a positive integer"),
    ("5-1 * * * *", "range '5-1' is backwards"),
    ("* * * * fri-sun", "backwards"),
    ("x * * * *", "minute field: 'x' is not a number 0-59"),
    ("* * * foo *", "or a name"),
    ("1,,2 * * * *", "minute field"),
    ("-1 * * * *", "minute field"),
    ("@reboot", "unknown macro"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6,9,11 *", "never fires"),
])
def test_bad_expressions(expr: str, words: str) -> None:
    with pytest.raises(CronError, match=words.replace("*", r"\*")):
        parse(expr)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime",
                                  "Europe/", "x" * 300])
def test_unknown_time_zone(zone: str) -> None:
    with pytest.raises(CronError, match="time zone"):
        parse("* * * * *", zone)


def test_not_a_string() -> None:
    with pytest.raises(CronError):
        parse(5)  # type: ignore[arg-type]
    with pytest.raises(CronError):
        parse("* * * * *", None)  # type: ignore[arg-type]


# --- next fire ------------------------------------------------------------------------

def test_next_fire_is_strictly_after() -> None:
    cron = parse("0 * * * *")
    assert cron.next_fire(ts("2026-01-01T10:00:00+00:00")) == ts("2026-01-01T11:00:00+00:00")
    assert cron.next_fire(ts("2026-01-01T09:59:59.999+00:00")) == ts("2026-01-01T10:00:00+00:00")


def test_every_second_with_six_fields() -> None:
    assert fires("* * * * * *", "2026-01-01T00:00:00.5+00:00") == [
        "2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00", "2026-01-01T00:00:03+00:00"]
    assert fires("*/20 * * * * *", "2026-12-31T23:59:50+00:00", 2) == [
        "2027-01-01T00:00:00+00:00", "2027-01-01T00:00:20+00:00"]


def test_month_and_year_rollover() -> None:
    assert fires("0 0 31 * *", "2026-01-31T00:00:00+00:00") == [
        "2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00", "2026-07-31T00:00:00+00:00"]
    assert fires("0 0 29 2 *", "2026-01-01T00:00:00+00:00", 2) == [
        "2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]


def test_vixie_day_rule() -> None:
    # Both restricted: the 13th OR any Friday.
    assert fires("0 0 13 * fri", "2026-03-01T00:00:00+00:00", 4) == [
        "2026-03-06T00:00:00+00:00", "2026-03-13T00:00:00+00:00",
        "2026-03-20T00:00:00+00:00", "2026-03-27T00:00:00+00:00"]
    # Day-of-month starts with `*`: not a restriction, so both must match
    # (odd days that are Mondays).
    assert fires("0 0 */2 * mon", "2026-03-01T00:00:00+00:00", 2) == [
        "2026-03-09T00:00:00+00:00", "2026-03-23T00:00:00+00:00"]
    # Only the weekday restricted.
    assert fires("0 0 * * mon", "2026-03-01T00:00:00+00:00", 1) == ["2026-03-02T00:00:00+00:00"]


def test_rare_expression_is_found_quickly() -> None:
    # Feb 29 that is a Sunday: decades apart; the search skips by month.
    cron = parse("0 0 29 2 */7")
    started = time.process_time()
    t = cron.next_fire(0)
    for _ in range(5):
        t = cron.next_fire(t)
    assert datetime.fromtimestamp(t, UTC).strftime("%m-%d %a") == "02-29 Sun"
    assert time.process_time() - started < 1.0


def test_search_is_bounded() -> None:
    cron = parse("@yearly")
    with pytest.raises(CronError, match="never fires"):
        cron.next_fire(ts("9999-06-01T00:00:00+00:00"))


# --- time zones and DST ---------------------------------------------------------------

def test_time_zone_wall_clock() -> None:
    assert fires("0 9 * * *", "2026-06-01T00:00:00+00:00", 1, "Europe/Berlin") == [
        "2026-06-01T09:00:00+02:00"]
    assert fires("0 9 * * *", "2026-01-01T00:00:00+00:00", 1, "Asia/Kathmandu") == [
        "2026-01-01T09:00:00+05:45"]


def test_dst_gap_is_skipped_for_that_day() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT: 02:30 does not exist that day.
    assert fires("30 2 * * *", "2026-03-07T00:00:00-05:00", 3, "America/New_York") == [
        "2026-03-07T02:30:00-05:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
    # Times after the gap that day still fire.
    assert fires("0 * * * *", "2026-03-08T00:30:00-05:00", 3, "America/New_York") == [
        "2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]


def test_dst_fold_fires_once_at_first_occurrence() -> None:
    # 2026-11-01 02:00 EDT falls back to 01:00 EST: 01:30 happens twice.
    assert fires("30 1 * * *", "2026-10-31T12:00:00-04:00", 3, "America/New_York") == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"]
    # Asked during the second pass of the hour: that hour's times already fired.
    cron = parse("*/20 1 * * *", "America/New_York")
    second_pass = ts("2026-11-01T01:10:00-05:00")
    assert cron.next_fire(second_pass) == ts("2026-11-02T01:00:00-05:00")


def test_half_hour_dst_zone() -> None:
    # Lord Howe Island moves its clocks by 30 minutes.
    # 2026-10-04 02:00 becomes 02:30: 02:15 does not exist that day.
    assert fires("15 2 * * *", "2026-10-03T12:00:00+10:30", 2, "Australia/Lord_Howe") == [
        "2026-10-05T02:15:00+11:00", "2026-10-06T02:15:00+11:00"]
    # 2027-04-04 02:00 becomes 01:30: 01:45 happens twice and fires once.
    assert fires("45 1 * * *", "2027-04-03T12:00:00+11:00", 2, "Australia/Lord_Howe") == [
        "2027-04-04T01:45:00+11:00", "2027-04-05T01:45:00+10:30"]


# --- properties against a brute-force reference ---------------------------------------

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("dom", 1, 31), ("month", 1, 12), ("dow", 0, 7))
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@st.composite
def field(draw: st.DrawFn, name: str, lo: int, hi: int) -> tuple[str, set[int], bool]:
    """(text, allowed values, starts with `*`) for one field."""
    def spell(v: int) -> str:
        if name == "month" and draw(st.booleans()):
            return MONTHS[v - 1].upper() if draw(st.booleans()) else MONTHS[v - 1]
        if name == "dow" and v < 7 and draw(st.booleans()):
            return DAYS[v]
        return str(v)

    kind = draw(st.sampled_from(["star", "star", "step", "value", "range", "list"]))
    if kind == "star":
        return "*", set(range(lo, hi + 1)), True
    if kind == "step":
        step = draw(st.integers(1, hi - lo + 1))
        return f"*/{step}", set(range(lo, hi + 1, step)), True
    a = draw(st.integers(lo, hi))
    if kind == "value":
        return spell(a), {a}, False
    if kind == "range":
        b = draw(st.integers(a, hi))
        step = draw(st.integers(1, 4))
        text = f"{spell(a)}-{spell(b)}" + (f"/{step}" if step > 1 else "")
        return text, set(range(a, b + 1, step)), False
    values = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=4))
    return ",".join(spell(v) for v in values), set(values), False


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, list[set[int]], bool, bool]:
    parts = [draw(field(*f)) for f in FIELDS]
    sets = [p[1] for p in parts]
    sets[4] = {v % 7 for v in sets[4]}
    return " ".join(p[0] for p in parts), sets, parts[2][2], parts[4][2]


def reference_match(sets: list[set[int]], dom_star: bool, dow_star: bool, t: time.struct_time) -> bool:
    minute, hour, dom, month, dow = sets
    if t.tm_min not in minute or t.tm_hour not in hour or t.tm_mon not in month:
        return False
    dom_ok = t.tm_mday in dom
    dow_ok = (t.tm_wday + 1) % 7 in dow
    return (dom_ok and dow_ok) if (dom_star or dow_star) else (dom_ok or dow_ok)


def possible(sets: list[set[int]], dom_star: bool, dow_star: bool) -> bool:
    """False for the day/month pairs the parser must refuse (`0 0 30 2 *`)."""
    if dom_star or not dow_star:
        return True
    longest = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    return any(min(sets[2]) <= longest[m - 1] for m in sets[3])


WINDOW_MIN = 4 * 24 * 60
instants = st.integers(ts("1990-01-01T00:00:00+00:00"), ts("2060-01-01T00:00:00+00:00"))


@settings(max_examples=200)
@given(expr=expressions(), after=instants, frac=st.sampled_from([0.0, 0.25, 59.5]))
def test_next_fire_matches_brute_force_utc(expr: tuple[str, list[set[int]], bool, bool],
                                           after: int, frac: float) -> None:
    text, sets, dom_star, dow_star = expr
    if not possible(sets, dom_star, dow_star):
        with pytest.raises(CronError, match="never fires"):
            parse(text)
        return
    got = parse(text).next_fire(after + frac)
    first = (after + frac) // 60 * 60 + 60
    for i in range(WINDOW_MIN):
        t = first + 60 * i
        if reference_match(sets, dom_star, dow_star, time.gmtime(t)):
            assert got == t, (text, after + frac)
            return
    assert got > first + 60 * (WINDOW_MIN - 1), (text, after + frac)
    assert reference_match(sets, dom_star, dow_star, time.gmtime(got))


DST_ZONES = ("America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago")


def transitions(zone: str, year: int = 2026) -> list[float]:
    """The instants in `year` at which the zone's UTC offset changes (to the hour)."""
    tz = ZoneInfo(zone)
    t = ts(f"{year}-01-01T00:00:00+00:00")
    out, offset = [], datetime.fromtimestamp(t, tz).utcoffset()
    for _ in range(366 * 24):
        t += 3600
        now = datetime.fromtimestamp(t, tz).utcoffset()
        if now != offset:
            out.append(t)
            offset = now
    return out


# (zone, a DST change): the windows below cross gaps and folds.
DST_CASES = [(zone, t) for zone in DST_ZONES for t in transitions(zone)]


@settings(max_examples=150)
@given(expr=expressions(), case=st.sampled_from(DST_CASES),
       shift=st.integers(-2 * 3600, 2 * 3600))
def test_next_fire_matches_brute_force_across_dst(expr: tuple[str, list[set[int]], bool, bool],
                                                  case: tuple[str, float], shift: int) -> None:
    """The first instant whose wall time matches, counting a repeated wall time
    only at its first occurrence (fold 0); a skipped wall time never occurs."""
    text, sets, dom_star, dow_star = expr
    if not possible(sets, dom_star, dow_star):
        return
    zone, change = case
    tz, after = ZoneInfo(zone), change + shift
    got = parse(text, zone).next_fire(after)
    window = 2 * 24 * 60
    first = after // 60 * 60 + 60
    for i in range(window):
        t = first + 60 * i
        wall = datetime.fromtimestamp(t, tz)
        if wall.fold == 0 and reference_match(sets, dom_star, dow_star, wall.timetuple()):
            assert got == t, (text, zone, after)
            return
    assert got > first + 60 * (window - 1), (text, zone, after)


def test_dst_cases_cover_every_zone() -> None:
    assert len(DST_CASES) == 2 * len(DST_ZONES)


def test_reference_agrees_on_a_known_case() -> None:
    """The reference itself: `0 12 * * mon` after a Sunday is the next day at noon."""
    sets = [{0}, {12}, set(range(1, 32)), set(range(1, 13)), {1}]
    monday_noon = calendar.timegm((2026, 3, 2, 12, 0, 0))
    assert reference_match(sets, True, False, time.gmtime(monday_noon))
    assert parse("0 12 * * mon").next_fire(monday_noon - 3600) == monday_noon
