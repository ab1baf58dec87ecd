"""Deploy windows with a controlled clock: cron starts, durations, time zones, next opening."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gitopsd.core.windows import Cron, Window, WindowError, next_opening, parse_duration, promotion_allowed

UTC = UTC


def window(expr: str, duration: str, allow: bool, tz: str = "UTC", name: str = "w") -> Window:
    return Window(name, allow, Cron.parse(expr), parse_duration(duration), tz)


OFFICE_HOURS = window("0 9 * * 1-5", "8h", True, "Europe/Berlin", "office hours")
FRIDAY_FREEZE = window("0 12 * * 5", "60h", False, "Europe/Berlin", "weekend freeze")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "when, allowed",
    [
        ("2026-11-24T08:30", True),  # Tuesday 09:30 Berlin
        ("2026-11-24T16:30", False),  # Tuesday 17:30 Berlin: after office hours
        ("2026-11-27T10:30", True),  # Friday 11:30 Berlin
        ("2026-11-27T11:30", False),  # Friday 12:30 Berlin: freeze started
        ("2026-11-28T10:00", False),  # Saturday
        ("2026-11-30T08:00", True),  # Monday 09:00 Berlin: freeze over at 00:00, office hours open
    ],
)
def test_allow_and_deny_windows_decide_with_the_time_zone(when, allowed):
    assert promotion_allowed((OFFICE_HOURS, FRIDAY_FREEZE), at(when))[0] is allowed


def test_the_refusal_names_the_window_and_when_promotion_opens_again():
    ok, decided = promotion_allowed((OFFICE_HOURS, FRIDAY_FREEZE), at("2026-11-28T10:00"))
    assert not ok and decided.name == "weekend freeze"
    assert next_opening((OFFICE_HOURS, FRIDAY_FREEZE), at("2026-11-28T10:00")) == at("2026-11-30T08:00")


def test_no_windows_means_always_open():
    assert promotion_allowed((), at("2026-11-28T03:00")) == (True, None)


def test_cron_day_of_month_and_day_of_week_follow_crons_or_rule():
    cron = Cron.parse("0 0 1 * 0")  # the 1st, or any Sunday
    assert cron.matches(datetime(2026, 12, 1))  # Tuesday the 1st
    assert cron.matches(datetime(2026, 11, 29))  # a Sunday
    assert not cron.matches(datetime(2026, 11, 30))


@pytest.mark.parametrize("bad", ["* * *", "61 * * * *", "a * * * *", "*/0 * * * *", "5-1 * * * *"])
def test_malformed_cron_expressions_are_refused_with_the_field_named(bad):
    with pytest.raises(WindowError):
        Cron.parse(bad)


def test_durations():
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration(30) == timedelta(seconds=30)
    with pytest.raises(WindowError):
        parse_duration("soon")


@pytest.mark.parametrize("bad", ["²d", "9999999999999999999d", 10**30])
def test_a_duration_of_digits_int_cannot_read_or_longer_than_a_timedelta_holds_is_a_window_error_not_a_crash(bad):
    with pytest.raises(WindowError, match="duration"):
        parse_duration(bad)


def test_is_open_agrees_with_checking_every_minute_of_the_window():
    """The day-by-day walk must say exactly what a minute-by-minute scan of (now - duration, now] says."""
    import random
    from zoneinfo import ZoneInfo

    rng = random.Random(4)
    exprs = ["0 9 * * 1-5", "*/15 * * * *", "30 2 * * 0", "0 0 1 * *", "0 0 29 2 *", "5 4 1,15 * 3", "* * * * *", "0 22 * * 5"]
    for _ in range(400):
        w = window(
            rng.choice(exprs),
            rng.choice(["1m", "45m", "8h", "2d", "60h"]),
            True,
            rng.choice(["UTC", "Europe/Berlin", "America/New_York"]),
        )
        now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(366 * 24 * 60))
        local = now.astimezone(ZoneInfo(w.timezone)).replace(second=0, microsecond=0)
        minutes = max(int(w.duration.total_seconds() // 60), 1)
        brute = any(w.cron.matches(local - timedelta(minutes=m)) for m in range(minutes))
        assert w.is_open(now) is brute, (w, now)
