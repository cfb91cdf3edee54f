"""The DM button in real Chromium on the three site replicas, with no bridge running
(DESIGN.md "Extension": content scripts, widget; "Stable test hooks"; "The three sites")."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from e2e.harness import BrowserSession, ReplicaServer

pytestmark = pytest.mark.e2e

BUTTON = '[data-parley="dm-button"]'
TIMEOUT = 10_000


def fixtures_address(replicas: ReplicaServer, handle: str) -> str:
    return str(replicas.fixtures["users"][handle]["address"]).lower()


def settled_button(page: Page) -> Locator:
    """The single DM button once its lookup finished (state is not "loading")."""
    button = page.locator(BUTTON)
    expect(button).to_have_count(1, timeout=TIMEOUT)
    expect(button).not_to_have_attribute("data-parley-state", "loading", timeout=TIMEOUT)
    return button


def recorder(page: Page) -> dict[str, Any]:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.__parleyRecorder))")


def after_two_frames(page: Page) -> None:
    """Let queued mutation callbacks (the content script's observers) run."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


PROFILE_CASES = [
    ("hey.xyz", "/u/alice", "lens:alice"),
    ("hey.xyz", "/u/bob?tab=posts", "lens:bob"),
    ("hey.xyz", "/account/{alice}", "{alice}"),
    ("orb.club", "/@alice", "lens:alice"),
    ("orb.ac", "/@carol", "lens:carol"),
    ("firefly.social", "/profile/lens/alice", "lens:alice"),
    ("firefly.social", "/profile/lens/lens%2Fbob", "lens:bob"),
    ("firefly.social", "/profile/farcaster/1003", "farcaster:1003"),
    ("firefly.social", "/profile/farcaster/bob", "farcaster:bob"),
    ("firefly.social", "/profile/wallet/{alice}", "{alice}"),
    ("firefly.social", "/profile/lens/alice/replies", "lens:alice"),
]


@pytest.mark.parametrize(("host", "path", "peer"), PROFILE_CASES)
def test_button_on_profile_pages(page: Page, replicas: ReplicaServer, host: str, path: str, peer: str) -> None:
    alice = fixtures_address(replicas, "alice")
    page.goto(replicas.url(host, path.format(alice=alice)))
    button = settled_button(page)
    expect(button).to_have_attribute("data-parley-peer", peer.format(alice=alice))
    expect(button).to_have_attribute("aria-label", "Message on Parley")
    # Not paired, no bridge: unavailable, and it says what to do.
    expect(button).to_have_attribute("data-parley-state", "unavailable")
    expect(button).to_have_text("Pair Parley")
    expect(button).to_have_attribute("title", re.compile("Pair", re.I))


def test_hey_button_sits_between_follow_and_more(page: Page, replicas: ReplicaServer) -> None:
    page.goto(replicas.url("hey.xyz", "/u/bob"))
    settled_button(page)
    around = page.evaluate(
        """() => { const b = document.querySelector('[data-parley="dm-button"]');
        return [b.previousElementSibling.getAttribute('aria-label'), b.nextElementSibling.getAttribute('aria-label')]; }"""
    )
    assert around == ["Follow", "More"]


def test_hey_own_profile_next_to_edit_account(page: Page, replicas: ReplicaServer) -> None:
    page.goto(replicas.url("hey.xyz", "/u/carol"))  # fixtures: "me" is carol
    settled_button(page)
    prev = page.evaluate("() => document.querySelector('[data-parley=\"dm-button\"]').previousElementSibling.getAttribute('aria-label')")
    assert prev == "Edit Account"


def test_firefly_button_in_the_follow_div_beside_address(page: Page, replicas: ReplicaServer) -> None:
    page.goto(replicas.url("firefly.social", "/profile/lens/alice"))
    settled_button(page)
    info = page.evaluate(
        """() => { const b = document.querySelector('[data-parley="dm-button"]');
        return { prev: b.previousElementSibling.textContent, parentSiblingIsAddress:
          b.parentElement.previousElementSibling.tagName }; }"""
    )
    assert info == {"prev": "Follow", "parentSiblingIsAddress": "ADDRESS"}


# (host, start page, [(link text to click, expected peer or None)]) — a tour by client-side links.
TOURS = {
    "lens": ("hey.xyz", "/", [("@alice", "lens:alice"), ("@bob", "lens:bob"), ("A post", None),
                              ("Explore", None), ("alice by address", "{alice}"), ("Settings", None),
                              ("@carol", "lens:carol"), ("@bob", "lens:bob")]),
    "orb": ("orb.club", "/", [("@alice", "lens:alice"), ("@bob", "lens:bob"), ("A post", None),
                              ("@carol", "lens:carol"), ("Explore", None), ("@alice", "lens:alice")]),
    "firefly": ("firefly.social", "/", [("alice (lens)", "lens:alice"), ("bob (lens/bob)", "lens:bob"),
                                        ("x profile", None), ("carol (fid)", "farcaster:1003"), ("A post", None),
                                        ("alice (wallet)", "{alice}"), ("Discover", None),
                                        ("bob (fname)", "farcaster:bob")]),
}
PROFILE_PATH = re.compile(r"^/(u/|account/|@|profile/(lens|farcaster|wallet)/)")


@pytest.mark.parametrize("site", sorted(TOURS))
def test_spa_navigation_tour(page: Page, replicas: ReplicaServer, site: str) -> None:
    host, start, steps = TOURS[site]
    alice = fixtures_address(replicas, "alice")
    page.goto(replicas.url(host, start))
    expect(page.locator("h1").first).to_be_visible(timeout=TIMEOUT)
    for text, peer in steps:
        before = page.url
        page.locator("nav a, #nav a", has_text=re.compile(f"^{re.escape(text)}$")).first.click()
        page.wait_for_function("before => location.href !== before", arg=before)
        if peer is None:
            expect(page.locator("h1, [data-replica='profile-header']").first).to_be_visible(timeout=TIMEOUT)
            after_two_frames(page)
            expect(page.locator(BUTTON)).to_have_count(0)
        else:
            button = settled_button(page)
            expect(button).to_have_attribute("data-parley-peer", peer.format(alice=alice), timeout=TIMEOUT)
            expect(page.locator(BUTTON)).to_have_count(1)
    # Back through history (popstate) to the previous page of the tour.
    page.go_back()
    prev_peer = [p for _, p in steps][-2]
    if prev_peer is None:
        after_two_frames(page)
        expect(page.locator(BUTTON)).to_have_count(0, timeout=TIMEOUT)
    else:  # back on a profile: its own button comes back, once
        button = settled_button(page)
        expect(button).to_have_attribute("data-parley-peer", prev_peer.format(alice=alice), timeout=TIMEOUT)
        expect(page.locator(BUTTON)).to_have_count(1)
    log = recorder(page)
    assert log["max"] == 1, log
    assert log["inserted"], "the recorder saw the buttons"
    for entry in log["inserted"]:
        assert PROFILE_PATH.match(entry["path"]), f"button inserted on a non-profile page: {entry}"


@pytest.mark.parametrize(("host", "path"), [("hey.xyz", "/u/alice"), ("orb.club", "/@bob"),
                                            ("firefly.social", "/profile/lens/carol")])
def test_rerendered_header_gets_exactly_one_button(page: Page, replicas: ReplicaServer, host: str, path: str) -> None:
    page.goto(replicas.url(host, path))
    first = settled_button(page)
    marker = first.evaluate("b => (b.dataset.testMark = 'first', b.getAttribute('data-parley-peer'))")
    for _ in range(3):
        page.locator('[data-replica="rerender"]').click()
        expect(page.locator('[data-parley="dm-button"][data-test-mark="first"]')).to_have_count(0, timeout=TIMEOUT)
        button = settled_button(page)
        expect(button).to_have_attribute("data-parley-peer", marker)
        button.evaluate("b => { b.dataset.testMark = 'first'; }")
    assert recorder(page)["max"] == 1


@pytest.mark.parametrize(("host", "path"), [("hey.xyz", "/u/alice?delay=2500"), ("orb.club", "/@alice?delay=2500"),
                                            ("firefly.social", "/profile/lens/alice?delay=2500")])
def test_late_rendered_action_row(page: Page, replicas: ReplicaServer, host: str, path: str) -> None:
    page.goto(replicas.url(host, path))
    # The header is not there yet when the content script starts; the button follows it in.
    expect(page.locator('[data-replica="profile-header"]')).to_have_count(0)
    expect(page.locator('[data-replica="profile-header"]')).to_have_count(1, timeout=TIMEOUT)
    button = settled_button(page)
    expect(button).to_have_attribute("data-parley-peer", "lens:alice")


def test_widget_opens_and_page_cannot_read_it(page: Page, replicas: ReplicaServer, browser: BrowserSession) -> None:
    page.goto(replicas.url("hey.xyz", "/u/alice"))
    settled_button(page).click()
    frame_el = page.locator('iframe[data-parley="widget"]')
    expect(frame_el).to_have_count(1)
    expect(frame_el).to_have_attribute(
        "src", f"{browser.extension_origin}/widget/widget.html?peer=lens%3Aalice"
    )
    frame = page.frame_locator('iframe[data-parley="widget"]')
    expect(frame.locator('[data-parley="composer"]')).to_be_visible(timeout=TIMEOUT)
    expect(frame.locator('[data-parley="send"]')).to_be_disabled()
    expect(frame.locator('[data-parley="error"]')).to_contain_text("not paired", timeout=TIMEOUT)
    # The page's main world cannot look inside the extension frame.
    probe = page.evaluate(
        """() => { const f = document.querySelector('iframe[data-parley="widget"]');
        let doc = 'readable'; try { doc = f.contentWindow.document ? 'readable' : 'null'; } catch (e) { doc = e.name; }
        return { contentDocument: f.contentDocument === null, windowDocument: doc }; }"""
    )
    assert probe == {"contentDocument": True, "windowDocument": "SecurityError"}
    browser.screenshot(page, "widget-not-paired")
    # Clicking again keeps one widget; close removes it.
    page.locator(BUTTON).click()
    expect(frame_el).to_have_count(1)
    page.locator('[data-parley="widget-close"]').click()
    expect(frame_el).to_have_count(0)


def test_popup_hooks_not_paired(browser: BrowserSession) -> None:
    popup = browser.open_popup()
    try:
        expect(popup.locator('[data-parley="status"]')).to_have_text("not paired", timeout=TIMEOUT)
        expect(popup.locator('[data-parley="bridge-url"]')).to_have_value("http://127.0.0.1:8737")
        expect(popup.locator('[data-parley="pair-code"]')).to_be_visible()
        expect(popup.locator('[data-parley="pair-submit"]')).to_be_enabled()
        # A non-loopback bridge URL is refused in the popup itself.
        popup.locator('[data-parley="bridge-url"]').fill("https://example.com")
        popup.locator('[data-parley="pair-code"]').fill("ABCD-1234")
        popup.locator('[data-parley="pair-submit"]').click()
        expect(popup.locator('[data-parley="error"]')).to_contain_text("http://", timeout=TIMEOUT)
        # A loopback URL with nothing listening: pairing fails as unreachable, still not paired.
        popup.locator('[data-parley="bridge-url"]').fill("http://127.0.0.1:9")
        popup.locator('[data-parley="pair-submit"]').click()
        expect(popup.locator('[data-parley="error"]')).to_contain_text("unreachable", timeout=TIMEOUT)
        expect(popup.locator('[data-parley="status"]')).to_have_text("not paired")
        browser.screenshot(popup, "popup-not-paired")
    finally:
        popup.close()
