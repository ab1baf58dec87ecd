"""Deploy windows: cron-like starts with a duration, in a time zone. Stdlib only (the hook uses it).

A window is open at `now` when some start matching its cron expression lies in (now - duration, now].
Plain classes rather than dataclasses, and `zoneinfo` only when a window is checked: the
pre-receive hook imports this on every push to an environment with windows. In the core because the settings
hold windows (core/settings.py) and the hook checks them (gate/policy.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class WindowError(ValueError):
    """A window in the config is malformed; the message says which part and why."""


def parse_cron_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise WindowError(f"{name}: bad step {step_text!r}")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()):
                raise WindowError(f"{name}: bad range {part!r}")
            start, end = int(a), int(b)
        elif part.isdigit():
            start = end = int(part)
        else:
            raise WindowError(f"{name}: {part!r} is not a number, range, list or *")
        if not (low <= start <= end <= high):
            raise WindowError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


class Cron:
    """A parsed five-field cron expression; `text` is what the config said."""

    __slots__ = ("text", "minutes", "hours", "days", "months", "weekdays", "days_restricted", "weekdays_restricted")

    def __init__(
        self,
        text: str,
        minutes: frozenset[int],
        hours: frozenset[int],
        days: frozenset[int],
        months: frozenset[int],
        weekdays: frozenset[int],
        days_restricted: bool,
        weekdays_restricted: bool,
    ):
        self.text = text
        self.minutes, self.hours, self.days, self.months = minutes, hours, days, months
        self.weekdays = weekdays  # 0 = Sunday
        self.days_restricted, self.weekdays_restricted = days_restricted, weekdays_restricted

    @classmethod
    def parse(cls, text: str) -> Cron:
        parts = text.split()
        if len(parts) != 5:
            raise WindowError(f"{text!r} must have 5 fields: minute hour day-of-month month day-of-week")
        sets = [parse_cron_field(p, *f) for p, f in zip(parts, FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(text, sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] != "*", parts[4] != "*")

    def matches(self, t: datetime) -> bool:
        return t.minute in self.minutes and t.hour in self.hours and self.day_matches(t)

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        day_ok = d.day in self.days
        weekday_ok = (d.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok  # cron's rule: either may match
        return day_ok and weekday_ok


class DurationTooLong(WindowError):
    """A duration longer than a timedelta holds (the config says what its own limit is instead)."""


def parse_duration(value: object) -> timedelta:
    """Given 30m, 8h, 2d or a number of seconds, return it as a timedelta. Raise WindowError ('²' is a digit to
    isdigit, not to int(); a timedelta holds at most 999,999,999 days)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        seconds = value
    else:
        text = str(value).strip()
        number, unit = text[:-1].strip(), text[-1:]
        if unit not in DURATION_UNITS or not (number.isascii() and number.isdigit()) or int(number) == 0:
            raise WindowError(f"duration {value!r} must be like 30m, 8h, 2d or a number of seconds")
        seconds = int(number) * DURATION_UNITS[unit]
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise DurationTooLong(f"duration {str(value)[:40]!r} is longer than 999999999 days: give a shorter one") from None


class Window:
    """An allow or deny window: starts matching `cron` in `timezone`, each lasting `duration`."""

    __slots__ = ("name", "allow", "cron", "duration", "timezone")

    def __init__(self, name: str, allow: bool, cron: Cron, duration: timedelta, timezone: str):
        self.name, self.allow, self.cron, self.duration, self.timezone = name, allow, cron, duration, timezone

    def __repr__(self) -> str:
        return (
            f"Window({self.name!r}, {'allow' if self.allow else 'deny'}, {self.cron.text!r}, {self.duration}, {self.timezone!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Window) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    def is_open(self, now: datetime) -> bool:
        """Is there a start in (now - duration, now], in wall-clock minutes of the window's time zone?

        Walks back day by day and, on a matching day, takes the latest start not after now: that
        one decides. (A long deny window costs a few days of checks, not one check per minute.)
        """
        local = now.astimezone(zone(self.timezone)).replace(second=0, microsecond=0, tzinfo=None)
        earliest = local - timedelta(minutes=max(int(self.duration.total_seconds() // 60), 1) - 1)
        day = local.date()
        while day >= earliest.date():
            if self.cron.day_matches(day):
                start = self._latest_start(day, local)
                if start is not None:
                    return start >= earliest
            day -= timedelta(days=1)
        return False

    def _latest_start(self, day: date, local: datetime) -> datetime | None:
        """The latest start on `day` not after `local`; on local's own day the later hours and minutes are skipped,
        not tried one by one (an every-minute cron checked over 8 days made each look of its environment cost seconds)."""
        today = day == local.date()
        for hour in sorted(self.cron.hours, reverse=True):
            if today and hour > local.hour:
                continue
            for minute in sorted(self.cron.minutes, reverse=True):
                if today and hour == local.hour and minute > local.minute:
                    continue
                return datetime(day.year, day.month, day.day, hour, minute)
        return None


def zone(name: str) -> tzinfo:
    """A time zone by IANA name; zoneinfo (and its tz database lookup) is imported only when needed."""
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def promotion_allowed(windows: tuple[Window, ...], now: datetime) -> tuple[bool, Window | None]:
    """Return (allowed, the window that decided): inside a deny window, or outside every allow window, is closed."""
    for window in windows:
        if not window.allow and window.is_open(now):
            return False, window
    allows = [w for w in windows if w.allow]
    if allows and not any(w.is_open(now) for w in allows):
        return False, allows[0]
    return True, None


def next_opening(windows: tuple[Window, ...], now: datetime, horizon: timedelta = timedelta(days=8)) -> datetime | None:
    """The first moment after `now` at which promotion is allowed, or None within the horizon.

    Promotion can only open where an allow window starts or a deny window ends, so only those
    moments are checked.
    """
    start = now.replace(second=0, microsecond=0)
    candidates = set()
    # Deny windows that started before now (up to the longest duration back) end in the future.
    back = max((int(w.duration.total_seconds() // 60) for w in windows), default=0)
    for m in range(-back, int(horizon.total_seconds() // 60)):
        t = start + timedelta(minutes=m)
        for w in windows:
            if w.cron.matches(t.astimezone(zone(w.timezone))):
                candidates.add(t if w.allow else t + w.duration)
    for t in sorted(candidates):
        if t > now and promotion_allowed(windows, t)[0]:
            return t
    return None


def closed_now(windows: tuple[Window, ...], now: float) -> tuple[str, float | None] | None:
    """Why the windows keep deployments out at `now` (seconds since the epoch) and when they open again; None: open."""
    moment = datetime.fromtimestamp(now, UTC)
    allowed, window = promotion_allowed(windows, moment)
    if allowed or window is None:
        return None
    opens = next_opening(windows, moment)
    when = opens.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if opens else None
    return (
        f"the deploy window is closed: {'outside' if window.allow else 'inside'} '{window.name}'; "
        + (f"it waits until {when}" if when else "it waits for the window to open (not within the next 8 days)"),
        opens.timestamp() if opens else None,
    )
