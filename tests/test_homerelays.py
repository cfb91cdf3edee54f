"""A home's relays (bridge/homerelays.py, issue 10 "Moving house"): home relays replaced by `parley relays
set` are still read for ``relay_grace_days`` (default 14), then no longer. Time is injected (``now_s``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.home import Home
from bridge.homerelays import DAY_S, relay_config, set_home_relays

R1, R2, R3 = "https://r1.example.org", "https://r2.example.org", "https://r3.example.org"
T = 1_700_000_000  # when `parley relays set` ran


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home")
    h.create()
    set_home_relays(h, [R1], now_s=T - DAY_S)
    return h


def test_a_replaced_relay_is_read_for_14_days_by_default(home: Home) -> None:
    rc = set_home_relays(home, [R2], now_s=T)
    assert rc.home == (R2,) and rc.previous == ((R1, T + 14 * DAY_S),)
    assert rc.reading(T) == (R2, R1)
    assert rc.reading(T + 14 * DAY_S - 1) == (R2, R1)  # the last second of the grace period
    assert rc.reading(T + 14 * DAY_S) == (R2,)  # over: R1 is no longer read
    assert rc.as_json(T + 14 * DAY_S) == {"home": [R2], "directory": [], "reading": [R2]}


@pytest.mark.parametrize("days", [1, 3, 30])
def test_relay_grace_days_sets_the_grace_period(home: Home, days: int) -> None:
    home.update_config(relay_grace_days=days)
    rc = set_home_relays(home, [R2], now_s=T)
    end = T + days * DAY_S
    assert rc.reading(end - 1) == (R2, R1)
    assert rc.reading(end) == (R2,)


def test_no_grace_period_stops_reading_the_old_relay_at_once(home: Home) -> None:
    home.update_config(relay_grace_days=0)
    assert set_home_relays(home, [R2], now_s=T).reading(T) == (R2,)


def test_an_expired_relay_is_dropped_from_the_record_at_the_next_move(home: Home) -> None:
    set_home_relays(home, [R2], now_s=T)
    # Moved again inside R1's grace period: R1 keeps its end, R2 gets its own.
    rc = set_home_relays(home, [R3], now_s=T + DAY_S)
    assert dict(rc.previous) == {R1: T + 14 * DAY_S, R2: T + 15 * DAY_S}
    assert rc.reading(T + 14 * DAY_S) == (R3, R2)
    # After R1's end, the next move forgets it.
    rc = set_home_relays(home, [R3, R2], now_s=T + 14 * DAY_S)
    assert rc.previous == () and relay_config(home).reading(T + 14 * DAY_S) == (R3, R2)
