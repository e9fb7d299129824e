"""Conversions between epoch milliseconds (the wire) and aware datetimes (PostgreSQL), and
calendar months (the policy's unit)."""

from __future__ import annotations

import calendar
import datetime as dt
import functools

__all__ = ["ms_to_dt", "dt_to_ms", "add_months", "hour_start_ms", "utc_day", "HOUR_MS", "DAY_MS", "MAX_MS"]

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_EPOCH_DAY = dt.date(1970, 1, 1)


MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last instant PostgreSQL and Python both hold


def utc_day(ms: int) -> dt.date:
    """The UTC calendar day of an epoch-milliseconds instant."""
    return _day_number(ms // DAY_MS)


@functools.lru_cache(maxsize=4096)
def _day_number(days: int) -> dt.date:  # per event on the hot path: one date object per day, made once
    return _EPOCH_DAY + dt.timedelta(days=days)


def ms_to_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def dt_to_ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def add_months(ms: int, months: int) -> int:
    """The same instant ``months`` calendar months later, the day clamped to the month's end
    (consent given on 31 January 2026 lapses on 28 February 2027)."""
    start = ms_to_dt(ms)
    total = start.month - 1 + months
    year, month = start.year + total // 12, total % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return dt_to_ms(start.replace(year=year, month=month, day=day))


def hour_start_ms(ms: int) -> int:
    return ms - ms % HOUR_MS
