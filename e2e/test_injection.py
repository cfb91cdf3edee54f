"""The DM button in real Chromium on the three site replicas, with no bridge running
(DESIGN.md "Extension": content scripts, widget; "Stable test hooks"; "The three sites").

Issue 11: each replica comes in three shapes (e2e/harness.py SHAPES): "direct" (Follow and the menu
are direct children of one row), "wrapped" (the sites' real wrappers; Orb without <main>) and
"unknown" (no recognisable row: the floating button). URL parsing is shape-independent, so the full
URL table runs on "direct" and a few profiles on the other shapes; the placement, navigation,
re-render and late-render scenarios run on every shape where they apply."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from e2e.harness import SHAPES, BrowserSession, ReplicaServer

pytestmark = pytest.mark.e2e

BUTTON = '[data-parley="dm-button"]'
FALLBACK = '[data-parley="dm-fallback"]'
TIMEOUT = 10_000
PLACED_SHAPES = ("direct", "wrapped")  # shapes whose action row the extension must recognise


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


SHAPE_CASES = (
    [("direct", *case) for case in PROFILE_CASES]
    + [("wrapped", *PROFILE_CASES[i]) for i in (2, 4, 7)]
    + [("unknown", *PROFILE_CASES[2])]  # test_fallback.py covers every site's unknown shape
)


def in_fallback(button: Locator) -> bool:
    return bool(button.evaluate("b => b.closest('[data-parley=\"dm-fallback\"]') !== null"))


@pytest.mark.parametrize(("shape", "host", "path", "peer"), SHAPE_CASES)
def test_button_on_profile_pages(page: Page, replicas: ReplicaServer, shape: str, host: str, path: str, peer: str) -> None:
    alice = fixtures_address(replicas, "alice")
    page.goto(replicas.url(host, path.format(alice=alice), shape=shape))
    button = settled_button(page)
    # In the row on the shapes the extension recognises; in the floating box on the unknown one.
    assert in_fallback(button) == (shape == "unknown")
    expect(button).to_have_attribute("data-parley-peer", peer.format(alice=alice))
    expect(button).to_have_attribute("aria-label", "Message on Parley")
    # Not paired, no bridge: unavailable, and it says what to do.
    expect(button).to_have_attribute("data-parley-state", "unavailable")
    expect(button).to_have_text("Pair Parley")
    expect(button).to_have_attribute("title", re.compile("Pair", re.I))


NEIGHBOURS = """() => { const b = document.querySelector('[data-parley="dm-button"]');
  const name = (el) => el && (el.getAttribute('aria-label') || el.querySelector('[aria-label]')?.getAttribute('aria-label')
    || el.textContent.trim());
  return { prev: name(b.previousElementSibling), next: name(b.nextElementSibling),
    prevClass: b.previousElementSibling.className, nextClass: b.nextElementSibling.className,
    rowClass: b.parentElement.className, parentPrev: b.parentElement.previousElementSibling?.tagName,
    inMain: b.closest('main') !== null, main: document.querySelector('main') !== null }; }"""


@pytest.mark.parametrize("shape", PLACED_SHAPES)
def test_hey_button_sits_between_follow_and_more(page: Page, replicas: ReplicaServer, shape: str) -> None:
    page.goto(replicas.url("hey.xyz", "/u/bob", shape=shape))
    settled_button(page)
    around = page.evaluate(NEIGHBOURS)
    assert [around["prev"], around["next"]] == ["Follow", "More"]
    if shape == "wrapped":  # heyxyz/hey: div.flex.items-center.space-x-2 > [div.contents > Follow, our button, div.relative > More]
        assert (around["prevClass"], around["nextClass"], around["rowClass"]) == ("contents", "relative", "flex items-center space-x-2")


@pytest.mark.parametrize("shape", PLACED_SHAPES)
def test_hey_own_profile_next_to_edit_account(page: Page, replicas: ReplicaServer, shape: str) -> None:
    page.goto(replicas.url("hey.xyz", "/u/carol", shape=shape))  # fixtures: "me" is carol
    settled_button(page)
    assert page.evaluate(NEIGHBOURS)["prev"] == "Edit Account"


@pytest.mark.parametrize("shape", PLACED_SHAPES)
def test_firefly_button_in_the_follow_div_beside_address(page: Page, replicas: ReplicaServer, shape: str) -> None:
    page.goto(replicas.url("firefly.social", "/profile/lens/alice", shape=shape))
    settled_button(page)
    around = page.evaluate(NEIGHBOURS)
    assert around["prev"] == "Follow"
    if shape == "direct":
        assert around["parentPrev"] == "ADDRESS"
    else:  # Profile/Info.tsx: div.ml-auto.flex.items-center.gap-2 > [Follow, our button, div.relative > More]
        assert (around["next"], around["nextClass"], around["rowClass"]) == ("More", "relative", "ml-auto flex items-center gap-2")


@pytest.mark.parametrize("shape", PLACED_SHAPES)
def test_orb_button_after_follow_with_or_without_main(page: Page, replicas: ReplicaServer, shape: str) -> None:
    page.goto(replicas.url("orb.club", "/@alice", shape=shape))
    settled_button(page)
    around = page.evaluate(NEIGHBOURS)
    assert around["prev"] == "Follow"
    # The "wrapped" Orb has no <main> at all: no landmark is required.
    assert (around["main"], around["inMain"]) == ((True, True) if shape == "direct" else (False, False))


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


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("site", sorted(TOURS))
def test_spa_navigation_tour(page: Page, replicas: ReplicaServer, site: str, shape: str) -> None:
    host, start, steps = TOURS[site]
    alice = fixtures_address(replicas, "alice")
    page.goto(replicas.url(host, start, shape=shape))
    expect(page.locator("h1").first).to_be_visible(timeout=TIMEOUT)
    for text, peer in steps:
        before = page.url
        page.locator("nav a, #nav a", has_text=re.compile(f"^{re.escape(text)}$")).first.click()
        page.wait_for_function("before => location.href !== before", arg=before)
        if peer is None:
            expect(page.locator("h1, [data-replica='profile-header']").first).to_be_visible(timeout=TIMEOUT)
            after_two_frames(page)
            expect(page.locator(BUTTON)).to_have_count(0)
            expect(page.locator(FALLBACK)).to_have_count(0)
        else:
            button = settled_button(page)
            expect(button).to_have_attribute("data-parley-peer", peer.format(alice=alice), timeout=TIMEOUT)
            expect(page.locator(BUTTON)).to_have_count(1)
            assert in_fallback(button) == (shape == "unknown")
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
    for entry in log["inserted"] + log["fallbacks"]:
        assert PROFILE_PATH.match(entry["path"]), f"button inserted on a non-profile page: {entry}"
    assert bool(log["fallbacks"]) == (shape == "unknown"), log["fallbacks"]


@pytest.mark.parametrize("shape", PLACED_SHAPES)  # on "unknown" the floating box is not in the header
@pytest.mark.parametrize(("host", "path"), [("hey.xyz", "/u/alice"), ("orb.club", "/@bob"),
                                            ("firefly.social", "/profile/lens/carol")])
def test_rerendered_header_gets_exactly_one_button(page: Page, replicas: ReplicaServer, host: str, path: str, shape: str) -> None:
    page.goto(replicas.url(host, path, shape=shape))
    first = settled_button(page)
    marker = first.evaluate("b => (b.dataset.testMark = 'first', b.getAttribute('data-parley-peer'))")
    for _ in range(3):
        page.locator('[data-replica="rerender"]').click()
        expect(page.locator('[data-parley="dm-button"][data-test-mark="first"]')).to_have_count(0, timeout=TIMEOUT)
        button = settled_button(page)
        expect(button).to_have_attribute("data-parley-peer", marker)
        button.evaluate("b => { b.dataset.testMark = 'first'; }")
    assert recorder(page)["max"] == 1


@pytest.mark.parametrize("shape", PLACED_SHAPES)
@pytest.mark.parametrize(("host", "path"), [("hey.xyz", "/u/alice?delay=2500"), ("orb.club", "/@alice?delay=2500"),
                                            ("firefly.social", "/profile/lens/alice?delay=2500")])
def test_late_rendered_action_row(page: Page, replicas: ReplicaServer, host: str, path: str, shape: str) -> None:
    page.goto(replicas.url(host, path, shape=shape))
    # The header is not there yet when the content script starts; the button follows it in.
    expect(page.locator('[data-replica="profile-header"]')).to_have_count(0)
    expect(page.locator('[data-replica="profile-header"]')).to_have_count(1, timeout=TIMEOUT)
    button = settled_button(page)
    expect(button).to_have_attribute("data-parley-peer", "lens:alice")
    # It renders after the 2 s fallback delay: the floating button came first, then gave way to the row.
    assert [f["peer"] for f in recorder(page)["fallbacks"]] == ["lens:alice"]
    expect(page.locator(FALLBACK)).to_have_count(0)
    assert not in_fallback(button)
    assert recorder(page)["max"] == 1


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
