"""E2E fixtures (DESIGN.md "Running and testing"): one replica server and one Chromium with the
extension per session; a fresh tab per test with a main-world recorder of every DM button ever
inserted (path, peer, and the most buttons seen at once) and of every floating DM button (issue 11:
path, peer, and when it appeared, in ms since the document started)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright

from e2e.harness import CHROMIUM, BrowserSession, ReplicaServer, launch_browser, replica_server, shared_playwright

RECORDER = """
(() => {
  const log = { inserted: [], max: 0, fallbacks: [] };
  Object.defineProperty(window, '__parleyRecorder', { value: log });
  const seen = new WeakSet();
  new MutationObserver(() => {
    const buttons = document.querySelectorAll('[data-parley="dm-button"]');
    log.max = Math.max(log.max, buttons.length);
    for (const b of buttons) {
      if (seen.has(b)) continue;
      seen.add(b);
      log.inserted.push({ path: location.pathname, peer: b.getAttribute('data-parley-peer') });
    }
    for (const f of document.querySelectorAll('[data-parley="dm-fallback"]')) {
      if (seen.has(f)) continue;
      seen.add(f);
      log.fallbacks.push({ path: location.pathname, peer: f.getAttribute('data-parley-peer'), at: performance.now() });
    }
  }).observe(document, { childList: true, subtree: true });
})();
"""


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[Playwright]:
    """One Playwright per test session: the sync API allows only one at a time in a thread, and
    several suites (the stand-in browser, the real-bridge scenarios) launch browsers. It is the
    harness's shared one, which a browser launched without ``playwright=`` joins too."""
    with shared_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def replicas() -> Iterator[ReplicaServer]:
    with replica_server() as server:
        yield server


@pytest.fixture(scope="session")
def browser(
    replicas: ReplicaServer, tmp_path_factory: pytest.TempPathFactory, playwright_session: Playwright
) -> Iterator[BrowserSession]:
    profile: Path = tmp_path_factory.mktemp("chromium-profile")
    with launch_browser(profile, replicas.port, playwright=playwright_session) as session:
        yield session


@pytest.fixture
def page(browser: BrowserSession) -> Iterator[Page]:
    tab = browser.context.new_page()
    tab.add_init_script(RECORDER)
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def chromium(playwright_session: Playwright) -> Iterator[Browser]:
    """A plain Chromium without the extension (the bridge's own pages: inbox, sign-in)."""
    kwargs: dict[str, Any] = {"executable_path": str(CHROMIUM)} if CHROMIUM.exists() else {}
    browser = playwright_session.chromium.launch(headless=True, args=["--no-sandbox", "--disable-gpu"], **kwargs)
    yield browser
    browser.close()
