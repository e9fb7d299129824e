import datetime as dt

import pytest

from lifecycle.core.clock import EventTimeClock, SimulatedClock, WallClock, make_clock
from lifecycle.core.timeutil import add_months, dt_to_ms, hour_start_ms


def ms(*args):
    return dt_to_ms(dt.datetime(*args, tzinfo=dt.UTC))


@pytest.mark.parametrize("start, months, end", [
    (ms(2026, 1, 15), 13, ms(2027, 2, 15)),
    (ms(2026, 1, 31, 12, 30), 13, ms(2027, 2, 28, 12, 30)),   # clamped to the month's end
    (ms(2027, 1, 31), 13, ms(2028, 2, 29)),                   # leap year
    (ms(2026, 12, 1), 1, ms(2027, 1, 1)),
])
def test_add_months_is_calendar_months(start, months, end):
    assert add_months(start, months) == end


def test_hour_start():
    assert hour_start_ms(ms(2026, 3, 1, 10, 59, 59)) == ms(2026, 3, 1, 10)


def test_event_time_clock_never_goes_back():
    clock = EventTimeClock()
    clock.observe(100)
    clock.observe(50)
    assert clock.now_ms() == 100


def test_simulated_clock_moves_by_months_in_no_time():
    clock = SimulatedClock(ms(2026, 1, 15))
    clock.advance(add_months(clock.now_ms(), 13) - clock.now_ms())
    assert clock.now_ms() == ms(2027, 2, 15)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_make_clock():
    assert isinstance(make_clock("event"), EventTimeClock)
    assert isinstance(make_clock("wall"), WallClock)
