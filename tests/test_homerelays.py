"""A home's relays (bridge/homerelays.py, issue 10 "Moving house"): home relays replaced by `parley relays
set` are still read for ``relay_grace_days`` (default 14), then no longer. Time is injected (``now_s``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bridge import identity
from bridge.daemon import GRACE_CHECK_S, Daemon
from bridge.home import Home, write_private
from bridge.homerelays import DAY_S, relay_config, set_home_relays
from bridge.keys import Secrets, generate_secrets
from bridge.relay.client import RelayClient
from tests.relay_fixtures import serve_relay, wait_until

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


# --- a running daemon stops reading a relay when its grace period ends ------------------------------


def new_home(path: Path) -> tuple[Home, Secrets]:
    """An initialised home (identity.json; the keys stay in memory: the daemon is handed them)."""
    secrets = generate_secrets()
    st = identity.authorize_statement(secrets.address, secrets.installation_id, secrets.signing_pub, secrets.identity_pub)
    record = identity.sign_statement(st, secrets.wallet_key).to_record()
    h = Home(path)
    h.create()
    ident = {"address": secrets.address, "installation_id": secrets.installation_id, "record": record.hex()}
    write_private(h.identity_file, json.dumps(ident).encode())
    return h, secrets


def test_a_running_daemon_stops_reading_a_relay_when_its_grace_period_ends(tmp_path: Path) -> None:
    """Not only at its next start or `parley relays set`: the daemon's own timer drops the relay."""
    with serve_relay(tmp_path / "r1.db") as r1, serve_relay(tmp_path / "r2.db") as r2:
        home, secrets = new_home(tmp_path / "home")
        RelayClient(r2).publish_identity(secrets.address, bytes.fromhex(home.identity()["record"]))  # registered there before
        start = int(time.time())
        set_home_relays(home, [r2], now_s=start)
        set_home_relays(home, [r1], now_s=start)  # moved from R2 to R1: R2 is read for 14 more days
        end = start + 14 * DAY_S
        now = [float(start)]
        daemon = Daemon(home, secrets, port=0, relay_url=None, echo=lambda s: None, clock=lambda: now[0])
        daemon.start()
        try:
            assert wait_until(lambda: daemon.relay_up.get(r1) is True and daemon.relay_up.get(r2) is True)
            now[0] = end - 1  # the grace period's last second: still read
            assert daemon.drop_expired_relays() == []
            assert daemon.engine.reading_relays == (r1, r2) and daemon.relay_up.get(r2) is True
            now[0] = end  # over: the timer (woken here instead of after its wait) stops reading R2
            daemon.wake_relays.set()
            assert wait_until(lambda: r2 not in daemon.relay_up and r2 not in daemon.engine.reading_relays)
            assert daemon.status()["relays"]["reading"] == [r1] and daemon.relay_up == {r1: True}
            assert daemon.engine.home_relays == (r1,)
        finally:
            daemon.stop()


def test_the_timer_wakes_at_the_next_grace_period_end_and_at_least_hourly(tmp_path: Path) -> None:
    home, secrets = new_home(tmp_path / "home")
    set_home_relays(home, ["http://127.0.0.1:1"], now_s=T)
    set_home_relays(home, ["http://127.0.0.1:2"], now_s=T)
    set_home_relays(home, ["http://127.0.0.1:3"], now_s=T + 2 * DAY_S)
    now = [float(T)]
    daemon = Daemon(home, secrets, port=0, relay_url=None, echo=lambda s: None, clock=lambda: now[0])
    try:
        assert daemon.next_grace_check() == GRACE_CHECK_S == 3600
        now[0] = T + 14 * DAY_S - 10.5
        assert daemon.next_grace_check() == 10.5  # relay :1's end
        now[0] = T + 14 * DAY_S
        assert daemon.next_grace_check() == GRACE_CHECK_S  # relay :2's end is two days away
    finally:
        daemon.server.server_close()
        daemon.store.close()
