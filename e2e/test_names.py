"""Issue 4 part 4: the DM button uses names, against REAL processes (a relay, Alice's and Bob's
``parley run``), a local Lens API v3 (tests/fakes/names.py, the real GraphQL shapes) and real Chromium
with the extension.

Alice's bridge resolves Lens names through the fake Lens API (``PARLEY_LENS_API_URL``); her contacts
for ``lens:bob`` and ``lens:carol`` are removed so the names really go through the resolver. The button
shows exactly one of three states (DESIGN.md "Stable test hooks": ``data-parley-state``):

* ``ready`` "Message": lens:bob → the Lens account's owner, Bob, who has a registered installation;
* ``unavailable`` "Not on Parley yet": lens:carol resolves, but nobody registered; the widget offers a
  copyable invite (navigator.clipboard in the extension page, not the site);
* ``unresolved`` "Couldn't resolve": the Lens API is down and the name was never cached; the reason
  from the bridge is in the button's title and in the widget.

The widget header shows the handle, the short address and whether the peer is verified.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, Playwright, expect

from e2e.demo import BUTTON, TIMEOUT_MS, World, open_dm, pair_via_popup, widget, world
from tests.fakes.names import LensApi
from tests.procs import Proc, parley

pytestmark = pytest.mark.e2e


def _random_address() -> str:
    return "0x" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def lens() -> Iterator[LensApi]:
    with LensApi() as api:
        yield api


@pytest.fixture(scope="module")
def wd(playwright_session: Playwright, lens: LensApi) -> Iterator[World]:
    with world(playwright=playwright_session) as w:
        for name in ("lens:bob", "lens:carol"):
            parley(w.alice.home, "contacts", "remove", name, check=True)
        # Lens v3: the username points at an account contract; its owner is an EOA. Bob registered his
        # EOA (the owner), Carol registered nothing.
        lens.accounts["bob"] = (_random_address(), w.bob.address)
        lens.accounts["carol"] = (_random_address(), str(w.replicas.fixtures["users"]["carol"]["address"]))
        # Alice's bridge again, now with a Lens API configured through its environment variable.
        w.alice.stop()
        proc = Proc(["run", "--port", str(w.alice.port), "--relay", w.relay_url], home=w.alice.home, PARLEY_LENS_API_URL=lens.url)
        w.alice.proc = proc  # the world stops it
        proc.expect(r"listening on")
        proc.expect("subscribed to")
        pair_via_popup(w.alice_browser, w.alice)
        yield w


def profile(wd: World, path: str) -> Page:
    page = wd.alice_browser.context.new_page()
    page.goto(wd.replicas.url("hey.xyz", path))
    return page


def test_ready_button_and_widget_header(wd: World, lens: LensApi) -> None:
    page = profile(wd, "/u/bob")
    button = page.locator(BUTTON)
    expect(button).to_have_attribute("data-parley-state", "ready", timeout=TIMEOUT_MS)
    expect(button).to_have_text("Message")
    expect(button).to_have_attribute("data-parley-peer", "lens:bob")
    assert any(r[0] == "POST" and r[2]["variables"]["request"]["username"]["localName"] == "bob" for r in lens.requests)
    w = open_dm(page, "lens:bob")
    bob = wd.bob.address
    expect(w.locator('[data-parley="peer-name"]')).to_have_text("lens:bob")
    expect(w.locator('[data-parley="peer-address"]')).to_have_text(f"{bob[:6].lower()}…{bob[-4:].lower()}")
    expect(w.locator('[data-parley="peer-address"]')).to_have_attribute("data-address", bob.lower())
    expect(w.locator('[data-parley="peer-verified"]')).to_have_attribute("data-verified", "true")
    expect(w.locator('[data-parley="peer-verified"]')).to_contain_text("verified")
    expect(w.locator('[data-parley="invite"]')).to_be_hidden()
    wd.alice_browser.screenshot(page, "names-1-ready-header")
    page.close()


def test_not_on_parley_yet_offers_a_copyable_invite(wd: World) -> None:
    page = profile(wd, "/u/carol")
    button = page.locator(BUTTON)
    expect(button).to_have_attribute("data-parley-state", "unavailable", timeout=TIMEOUT_MS)
    expect(button).to_have_text("Not on Parley yet")
    expect(button).to_have_attribute("data-parley-reason", "not-on-parley")
    button.click()
    w = widget(page)
    invite = w.locator('[data-parley="invite"]')
    expect(invite).to_be_visible(timeout=TIMEOUT_MS)
    expect(w.locator('[data-parley="invite-peer"]')).to_have_text("lens:carol")
    expect(w.locator('[data-parley="peer-verified"]')).to_have_attribute("data-verified", "false")
    text = w.locator('[data-parley="invite-text"]')
    expect(text).not_to_have_value("", timeout=TIMEOUT_MS)
    value = text.input_value()
    assert value.startswith("I'm on Parley — private messages across Lens, Orb and Firefly")
    assert wd.alice.address in value
    expect(w.locator('[data-parley="composer"]')).to_be_disabled()
    w.locator('[data-parley="invite-copy"]').click()
    expect(w.locator('[data-parley="invite-copied"]')).to_have_text("Copied", timeout=TIMEOUT_MS)
    # What was copied is exactly the invite: paste it into a scratch field (a real user's Ctrl+V).
    scratch = w.locator('[data-parley="invite-text"]')
    scratch.evaluate("(el) => { el.readOnly = false; el.value = ''; el.focus(); }")
    page.keyboard.press("Control+V")
    expect(scratch).to_have_value(value, timeout=TIMEOUT_MS)
    # The site itself never got the invite through its clipboard or DOM.
    assert value not in page.content()
    wd.alice_browser.screenshot(page, "names-2-invite")
    page.close()


def test_unresolvable_name_says_why(wd: World, lens: LensApi) -> None:
    lens.down()
    try:
        page = profile(wd, "/u/alice")  # never looked up before: no cached answer to fall back on
        button = page.locator(BUTTON)
        expect(button).to_have_attribute("data-parley-state", "unresolved", timeout=TIMEOUT_MS)
        expect(button).to_have_text("Couldn’t resolve")
        expect(button).to_have_attribute("data-parley-reason", "unreachable")
        title = button.get_attribute("title") or ""
        assert "Lens API" in title, title
        button.click()
        w = widget(page)
        error = w.locator('[data-parley="error"]')
        expect(error).to_contain_text("Couldn’t resolve lens:alice", timeout=TIMEOUT_MS)
        expect(error).to_contain_text("Lens API")
        expect(w.locator('[data-parley="composer"]')).to_be_disabled()
        wd.alice_browser.screenshot(page, "names-3-unresolved")
        page.close()
    finally:
        lens.up()
    # Back up: the same name now resolves (Alice herself is registered through her Lens owner address).
    lens.accounts["alice"] = (_random_address(), wd.alice.address)
    page = profile(wd, "/u/alice")
    expect(page.locator(BUTTON)).to_have_attribute("data-parley-state", "ready", timeout=TIMEOUT_MS)
    page.close()


def test_states_are_exclusive_and_never_broken(wd: World) -> None:
    """Every button ends in exactly one of the three states, with text, a title and a click target."""
    seen: dict[str, Any] = {}
    for path in ("/u/bob", "/u/carol"):
        page = profile(wd, path)
        button = page.locator(BUTTON)
        expect(button).to_have_count(1, timeout=TIMEOUT_MS)
        expect(button).not_to_have_attribute("data-parley-state", "loading", timeout=TIMEOUT_MS)
        state = button.get_attribute("data-parley-state")
        assert state in {"ready", "unavailable", "unresolved"}
        assert (button.text_content() or "").strip() and button.get_attribute("title")
        assert button.is_enabled()
        seen[path] = state
        page.close()
    assert seen == {"/u/bob": "ready", "/u/carol": "unavailable"}
