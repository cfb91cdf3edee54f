"""Issue 10 end to end: Alice and Bob live on relays run by three different operators and share only
the directory (docs/PROTOCOL.md §6.6 "Several relays", §7 "TLS and relay URLs").

- R1 is Alice's home relay (plain http on loopback), R2 Bob's, served over TLS with a throw-away CA
  (``PARLEY_CA_BUNDLE`` for every ``parley`` command and daemon), R3 the directory both use.
- Two real ``parley run`` daemons, two Chromium browsers with the real extension, each paired through
  its popup; Alice writes from Bob's Orb profile, Bob answers from Alice's Firefly profile.

Alice's bridge finds Bob only through the directory and delivers to R2; Bob's reply goes to R1. One
world for the module; the tests run in file order and build on each other. Screenshots go into
``e2e/artifacts/three-operators-*.png``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme
from playwright.sync_api import FrameLocator, Page, Playwright, expect

from bridge.protocol import relaylist, wire
from e2e.demo import (
    ALICE_FID,
    TIMEOUT_MS,
    Homes,
    World,
    expect_message,
    open_dm,
    pair_via_popup,
    ready_button,
    send_in_widget,
    world,
)
from tests.procs import Proc, parley, start_relay
from tests.relay_fixtures import tls_files

pytestmark = pytest.mark.e2e

HELLO = "Hi Bob, Alice here, from a relay you have never heard of"
REPLY = "Hello Alice, Bob answering through my own relay"
RELAYS = ("r1", "r2", "r3")


def three_operators(tmp: Path, stack: contextlib.ExitStack) -> Homes:
    """R1 (Alice's home, http), R2 (Bob's home, https with a trustme CA for 127.0.0.1), R3 (the directory)."""
    chain, key, bundle = tls_files(tmp, trustme.CA(), "127.0.0.1")
    started: dict[str, tuple[Proc, str]] = {}
    for name in RELAYS:
        tls = ("--tls-cert", chain, "--tls-key", key) if name == "r2" else ()
        proc, url = start_relay(tmp / f"{name}.db", 0, 1000.0, *tls)
        stack.callback(proc.stop)
        started[name] = (proc, url)
    r1, r2, r3 = (started[n][1] for n in RELAYS)
    assert r2.startswith("https://127.0.0.1:") and r1.startswith("http://") and r3.startswith("http://")
    return Homes(
        relays=started,
        home={"alice": (r1,), "bob": (r2,)},
        directory={"alice": (r3,), "bob": (r3,)},
        env={"PARLEY_CA_BUNDLE": bundle},
    )


@pytest.fixture(scope="module")
def wd(playwright_session: Playwright) -> Iterator[World]:
    with world(playwright=playwright_session, relays=three_operators) as w:
        yield w


def url_of(wd: World, name: str) -> str:
    return wd.relays[name][1]


def shot(wd: World, page: Page, name: str) -> None:
    wd.alice_browser.screenshot(page, f"three-operators-{name}")


def published_on(wd: World, relay: str, address: str) -> tuple[list[str], list[relaylist.RelayList]]:
    """What ``relay`` answers for ``address`` (``GET /v1/identity/<address>``): its identity records and
    its relay lists (decoded). R2's certificate is checked against the world's CA."""
    r = requests.get(f"{url_of(wd, relay)}/v1/identity/{address}", timeout=10, verify=wd.alice.env["PARLEY_CA_BUNDLE"])
    r.raise_for_status()
    body = r.json()
    return list(body["records"]), [relaylist.RelayList.decode(wire.b64d(x)) for x in body["relay_lists"]]


def thread(w: FrameLocator) -> list[tuple[str | None, str | None]]:
    """The widget's messages as (direction, text), in order."""
    return [(m.get_attribute("data-direction"), m.locator('[data-parley="text"]').text_content()) for m in w.locator('[data-parley="message"]').all()]


def test_1_the_only_shared_relay_is_the_directory(wd: World) -> None:
    r1, r2, r3 = (url_of(wd, n) for n in RELAYS)
    for who, home in ((wd.alice, r1), (wd.bob, r2)):
        shown = json.loads(parley(who.home, "relays", "--json", check=True, **who.env).stdout)
        assert (shown["home"], shown["directory"]) == ([home], [r3]), shown
    # Each identity (and its signed relay list naming its home) is on its home relay and the directory, and
    # nowhere else: Alice's bridge can only learn of Bob through R3.
    for who, home, elsewhere in ((wd.alice, "r1", "r2"), (wd.bob, "r2", "r1")):
        for relay in (home, "r3"):
            records, lists = published_on(wd, relay, who.address)
            assert records, f"{who.name}'s identity is not on {relay}"
            assert [rl.relays for rl in lists] == [(url_of(wd, home),)], f"{who.name}'s relay list on {relay}: {lists}"
        assert published_on(wd, elsewhere, who.address) == ([], []), f"{who.name} is on {elsewhere}"


def test_2_both_pair_through_the_popup(wd: World) -> None:
    shot(wd, pair_via_popup(wd.alice_browser, wd.alice), "1-alice-paired")
    shot(wd, pair_via_popup(wd.bob_browser, wd.bob), "1-bob-paired")


def test_3_a_conversation_across_three_operators(wd: World) -> None:
    a = wd.alice_browser.context.new_page()
    a.goto(wd.replicas.url("orb.club", "/@bob"))
    ready_button(a, "lens:bob")
    a_w = open_dm(a, "lens:bob")
    expect(a_w.locator('[data-parley="peer-address"]')).to_have_attribute("data-address", wd.bob.address.lower())
    send_in_widget(a_w, HELLO)
    shot(wd, a, "2-alice-sent-from-orb")

    b = wd.bob_browser.context.new_page()
    b.goto(wd.replicas.url("firefly.social", f"/profile/farcaster/{ALICE_FID}"))
    b_w = open_dm(b, f"farcaster:{ALICE_FID}")
    expect_message(b_w, HELLO, "in")
    send_in_widget(b_w, REPLY)
    shot(wd, b, "3-bob-replied-on-firefly")
    expect_message(a_w, REPLY, "in")
    shot(wd, a, "4-alice-sees-the-reply")

    # Each message exactly once on both sides, live and in a freshly loaded thread.
    expect(a_w.locator('[data-parley="message"]')).to_have_count(2, timeout=TIMEOUT_MS)
    expect(b_w.locator('[data-parley="message"]')).to_have_count(2, timeout=TIMEOUT_MS)
    assert thread(a_w) == [("out", HELLO), ("in", REPLY)]
    assert thread(b_w) == [("in", HELLO), ("out", REPLY)]
    lens = wd.alice_browser.context.new_page()
    lens.goto(wd.replicas.url("hey.xyz", "/u/bob"))
    l_w = open_dm(lens, "lens:bob")
    expect(l_w.locator('[data-parley="message"]')).to_have_count(2, timeout=TIMEOUT_MS)
    assert thread(l_w) == [("out", HELLO), ("in", REPLY)]
    shot(wd, lens, "5-alice-whole-thread-on-lens")


def test_4_no_relay_holds_either_plaintext(wd: World) -> None:
    envelopes = {}
    for name in RELAYS:
        with contextlib.closing(sqlite3.connect(wd.tmp / f"{name}.db")) as db:
            dump = "\n".join(db.iterdump()).encode()
            envelopes[name] = db.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0]
        for text in (HELLO, REPLY):
            raw = text.encode()
            assert raw not in dump and raw.hex().encode() not in dump, f"{name} holds {text!r}"
    # Not vacuous: the sealed messages are there, on the homes where each recipient reads; the directory
    # only introduced them and carries no mail.
    assert envelopes["r1"] >= 1 and envelopes["r2"] >= 1 and envelopes["r3"] == 0, envelopes
