"""Issue 15 item 8, the backup in the browser, with REAL processes: two relays (``parley relay``),
Alice's ``parley run`` (both relays are her home relays), Bob's home (a peer on the first relay, so a
site can show a DM button), and Chromium with the real extension.

1. A hostile site (the hey.xyz replica, the attacker's script in the page) and the chat widget it
   hosts: the page's postMessages to the widget, a runtime message from the widget frame, and a
   widget port (re-attached as the worker allows) asking `backup.*` are all refused; nothing about the
   backup reaches the page; the bridge still has no key.
2. The popup: "Set up backup" asks first, shows the key once, a wrong key typed back is refused, the
   right one turns the backup on; the popup then shows the backup on both relays, and
   ``parley backup remote status --json`` agrees; the relays hold the vault the key names; a second
   createKey is refused; the key is in no extension storage, no bridge log, no database.
3. Alice's inbox page shows the same state (each relay, the standby installation) and refuses a
   second key; its session storage and URL never held the key; a write without the CSRF token is refused.
4. Bob's inbox page (a bridge with no key yet) runs the same setup flow end to end.

The tests run in file order and build on each other (one world per module).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Frame, Page, Playwright, expect

from e2e.demo import TIMEOUT_MS, Bridge, open_dm, pair_via_popup
from e2e.harness import BrowserSession, ReplicaServer, launch_browser, replica_server, wait_until
from tests.procs import Proc, free_port, parley, start_bridge, start_relay, whoami

pytestmark = pytest.mark.e2e

#: How often the daemons back up while something changed (minutes; fractions allowed): the test
#: waits for a backup, not for a quarter of an hour.
INTERVAL_MINUTES = "0.05"
CREATE = "parley/popup/backup-create-key"
BACKUP_WAIT_MS = 60_000


@dataclass
class Env:
    tmp: Path
    relays: list[tuple[Proc, str]]
    alice: Bridge
    bob: Bridge
    replicas: ReplicaServer
    browser: BrowserSession
    popup: Page
    notes: dict[str, Any] = field(default_factory=dict)

    def status(self, who: Bridge) -> dict[str, Any]:
        """``parley backup remote status --json`` (the CLI's own view, while the daemon runs)."""
        return json.loads(parley(who.home, "backup", "remote", "status", "--json", check=True).stdout)


def _start(bridge: Bridge) -> None:
    bridge.proc, url = start_bridge(bridge.home, bridge.port, None)
    assert url == bridge.url
    bridge.proc.expect("subscribed to")


@pytest.fixture(scope="module")
def env(playwright_session: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("backup-ui")
    relays = [start_relay(tmp / "relay-1.db"), start_relay(tmp / "relay-2.db")]
    bridges: list[Bridge] = []
    try:
        urls = [url for _, url in relays]
        for name, homes in (("alice", urls), ("bob", urls[:1])):
            home = tmp / name
            parley(home, "init", *(a for u in homes for a in ("--relay", u)), check=True)
            parley(home, "config", "set", "backup_interval_minutes", INTERVAL_MINUTES, check=True)
            me = whoami(home)
            bridges.append(Bridge(name, home, me["address"], me["did"], free_port(), homes[0], pin_relay=False))
        alice, bob = bridges
        parley(alice.home, "contacts", "add", "lens:bob", bob.address, check=True)
        for b in bridges:
            _start(b)
        with replica_server() as replicas:
            replicas.set_address("bob", bob.address)
            with launch_browser(tmp / "chromium", replicas.port, playwright=playwright_session) as browser:
                popup = pair_via_popup(browser, alice)
                yield Env(tmp, relays, alice, bob, replicas, browser, popup)
    finally:
        for b in bridges:
            b.stop()
        for proc, _ in relays:
            proc.stop()


def _db_bytes(home: Path) -> bytes:
    """Every byte of the home's database files (WAL included): where a stored key would be."""
    return b"".join(p.read_bytes() for p in sorted(home.glob("parley.db*")))


def _storage(browser: BrowserSession) -> str:
    worker = browser.service_worker()
    return json.dumps(worker.evaluate(
        "async () => ({ local: await chrome.storage.local.get(null), session: await chrome.storage.session.get(null) })"
    ))


# --- 1 -------------------------------------------------------------------------------------------

#: The attacker's page script: listens to every message, and asks the widget frame for the backup in
#: every shape the worker's protocol has (as the page cannot reach the worker, only the frame).
HOSTILE = """async () => {
  const heard = [];
  window.addEventListener('message', (e) => heard.push(JSON.stringify(e.data)));
  const frame = document.querySelector('iframe[data-parley="widget"]');
  const asks = [
    { type: 'rpc', id: 1, method: 'backup.createKey', params: {} },
    { type: 'rpc', id: 2, method: 'backup.status', params: {} },
    { type: 'parley/popup/backup-create-key' },
    { type: 'parley/popup/backup-status' },
    { type: 'parley/widget-nonce', nonce: 'x', method: 'backup.createKey' },
  ];
  for (const ask of asks) frame.contentWindow.postMessage(ask, '*');
  let runtime = 'absent';
  try {
    if (globalThis.chrome && chrome.runtime && chrome.runtime.sendMessage) {
      runtime = await new Promise((resolve) => {
        try { chrome.runtime.sendMessage('__EXT__', { type: 'parley/popup/backup-create-key' }, (r) => resolve(JSON.stringify(r ?? null))); }
        catch (e) { resolve('threw: ' + e.message); }
      });
    }
  } catch (e) { runtime = 'threw: ' + e.message; }
  await new Promise((resolve) => setTimeout(resolve, 1500));
  return { heard, runtime };
}"""

#: Run inside the widget frame (as a compromised widget would): a runtime message as the popup sends
#: it, then a port re-attached the way the worker allows a granted frame after a restart, asking
#: every backup method.
WIDGET = """async ({ peer }) => {
  const out = {};
  out.message = await new Promise((resolve) => {
    chrome.runtime.sendMessage({ type: 'parley/popup/backup-create-key' }, (r) => {
      resolve(chrome.runtime.lastError ? 'no answer: ' + chrome.runtime.lastError.message : JSON.stringify(r));
    });
  });
  const port = chrome.runtime.connect({ name: 'parley-widget' });
  const got = [];
  port.onMessage.addListener((m) => got.push(m));
  const until = async (cond) => { for (let i = 0; i < 400 && !cond(); i += 1) await new Promise((r) => setTimeout(r, 25)); };
  port.postMessage({ type: 'attach', nonce: null });
  await until(() => got.some((m) => m.type === 'gate'));
  out.gate = got.find((m) => m.type === 'gate');
  port.postMessage({ type: 'hello', peer });
  const methods = ['backup.createKey', 'backup.status', 'backup.confirmKey', 'backup.setRemote', 'inbox.link'];
  methods.forEach((method, i) => port.postMessage({ type: 'rpc', id: 100 + i, method, params: { peer, replace: true, enabled: true, recovery_key: 'a'.repeat(64) } }));
  await until(() => methods.every((_, i) => got.some((m) => m.id === 100 + i)));
  out.answers = methods.map((_, i) => got.find((m) => m.id === 100 + i) ?? null);
  port.postMessage({ type: 'rpc', id: 200, method: 'consent.get', params: { peer } });
  await until(() => got.some((m) => m.id === 200));
  out.allowed = got.find((m) => m.id === 200) ?? null;
  port.disconnect();
  return out;
}"""


def _widget_frame(page: Page) -> Frame:
    frame = next((f for f in page.frames if f.url.startswith("chrome-extension://") and "/widget/widget.html" in f.url), None)
    assert frame is not None, [f.url for f in page.frames]
    return frame


def test_1_a_hostile_page_and_its_widget_cannot_reach_the_backup(env: Env) -> None:
    before = env.status(env.alice)
    assert before["has_key"] is False and before["enabled"] is False
    page = env.browser.context.new_page()
    page.goto(env.replicas.url("hey.xyz", "/u/bob"))
    open_dm(page, "lens:bob")

    found = page.evaluate(HOSTILE.replace("__EXT__", env.browser.extension_id))
    assert found["runtime"] in ("absent",) or found["runtime"].startswith("threw"), found["runtime"]
    assert not any("recovery" in h or "has_key" in h or "backup" in h for h in found["heard"]), found["heard"]

    out = _widget_frame(page).evaluate(WIDGET, {"peer": env.bob.address})
    assert out["message"].startswith("no answer"), out["message"]  # the popup's message, from a widget: not answered
    assert out["gate"] == {"type": "gate", "ok": True}  # the port is a live widget's ...
    for answer in out["answers"]:  # ... and still every backup method (and the page link) is refused
        assert answer == {"type": "rpc-result", "id": answer["id"], "error": {"code": -32602, "message": "method or params not allowed"}}, answer
    assert out["allowed"]["result"]["consent"] == "allowed", out["allowed"]  # while what a widget may do works

    after = env.status(env.alice)
    assert after["has_key"] is False and after["enabled"] is False and after["confirmed"] is False
    assert "recovery key" not in env.alice.output()
    page.close()


# --- 2 -------------------------------------------------------------------------------------------


def _valid_other_key(key: str) -> str:
    """Another well-formed recovery key (its checksum right), in the display form: a real mismatch."""
    from bridge.backup import recovery

    while True:
        other = recovery.display(recovery.generate())
        if other != key:
            return other


def test_2_the_popup_sets_up_backup_and_shows_it_on_both_relays(env: Env) -> None:
    popup = env.browser.open_popup()
    line = popup.locator('[data-parley="backup-line"]')
    expect(line).to_have_text("Not set up", timeout=TIMEOUT_MS)
    popup.locator('[data-parley="backup-setup"]').click()
    expect(popup.locator('[data-parley="backup-ask-text"]')).to_have_text(
        "A recovery key restores everything if you lose this device. Anyone with it can read your history. Create it?")
    assert env.status(env.alice)["has_key"] is False  # asking creates nothing
    popup.locator('[data-parley="backup-create"]').click()
    groups = popup.locator('[data-parley="backup-key-group"]')
    expect(groups).to_have_count(16, timeout=TIMEOUT_MS)
    key = " ".join(groups.all_text_contents())
    assert re.fullmatch(r"[a-z0-9]{4}( [a-z0-9]{4}){15}", key), key
    env.notes["key"] = key
    made = env.status(env.alice)
    assert made["has_key"] is True and made["confirmed"] is False and made["enabled"] is False  # not on yet

    popup.locator('[data-parley="backup-written"]').click()
    expect(popup.locator('[data-parley="backup-key-step"]')).to_be_hidden()
    typed = popup.locator('[data-parley="backup-typed"]')
    typed.fill(_valid_other_key(key))
    popup.locator('[data-parley="backup-confirm"]').click()
    expect(popup.locator('[data-parley="backup-message"]')).to_contain_text("not the recovery key that was shown", timeout=TIMEOUT_MS)
    wrong = env.status(env.alice)
    assert wrong["confirmed"] is False and wrong["enabled"] is False

    typed.fill(key.upper().replace(" ", "-"))
    popup.locator('[data-parley="backup-confirm"]').click()
    expect(popup.locator('[data-parley="backup-message"]')).to_contain_text("confirmed and backup is on", timeout=TIMEOUT_MS)
    expect(line).to_have_text(re.compile(r"^Backed up .+ · .+ · 2 relays$"), timeout=BACKUP_WAIT_MS)
    assert groups.count() == 0 and typed.input_value() == ""

    # The CLI agrees with what the popup shows.
    st = env.status(env.alice)
    assert st["enabled"] is True and st["confirmed"] is True and st["last_backup_at"] and st["size"] > 0
    assert sorted(r["url"] for r in st["relays"]) == sorted(url for _, url in env.relays)
    assert all(r["state"] == "ok" for r in st["relays"]), st["relays"]
    shown = line.text_content() or ""
    assert shown.split(" · ")[1] == _size(st["size"]), (shown, st["size"])

    # Each relay holds the vault the key names (the relay needs the key's Ed25519 key to list it).
    from bridge.backup import recovery
    from bridge.relay.client import RelayClient

    keys = recovery.derive(recovery.parse(key))
    for _, url in env.relays:
        objects = RelayClient(url).backup_list(keys.auth_private)
        assert objects and all(o["size"] > 0 for o in objects), (url, objects)

    # A second key is refused (the key was shown once and is not kept); so is replacing a confirmed one.
    for replace in (False, True):
        again = popup.evaluate("(msg) => chrome.runtime.sendMessage(msg)", {"type": CREATE, **({"replace": True} if replace else {})})
        assert again["ok"] is False and again["reason"] == ("confirmed" if replace else "exists"), again
    # The key is kept nowhere but on paper: no extension storage, no bridge output, no database file.
    canonical = key.replace(" ", "")
    assert key not in _storage(env.browser) and canonical not in _storage(env.browser)
    assert canonical not in env.alice.output() and key not in env.alice.output()
    db = _db_bytes(env.alice.home)
    assert canonical.encode() not in db and key.encode() not in db
    popup.close()


def _size(n: int) -> str:
    """What common/backup-format.js `size` says for ``n`` bytes."""
    if n < 1024:
        return f"{n} B"
    v, units = n / 1024, ["KB", "MB", "GB", "TB"]
    i = 0
    while v >= 1024 and i < len(units) - 1:
        v, i = v / 1024, i + 1
    return f"{v:.1f} {units[i]}"


# --- 3 -------------------------------------------------------------------------------------------


def test_3_the_inbox_page_shows_the_same_and_keeps_no_key(env: Env) -> None:
    popup = env.browser.open_popup()
    expect(popup.locator('[data-parley="backup-line"]')).to_have_text(re.compile("^Backed up"), timeout=TIMEOUT_MS)
    with env.browser.context.expect_page(timeout=TIMEOUT_MS) as opened:
        popup.locator('[data-parley="open-inbox"]').click()
    inbox = opened.value
    panel = inbox.locator('[data-parley="backup"]')
    expect(panel).to_have_attribute("data-ready", "true", timeout=TIMEOUT_MS)
    st = env.status(env.alice)
    expect(panel.locator('[data-parley="backup-line"]')).to_have_text(re.compile(rf"^Backed up .+ · {re.escape(_size(st['size']))} · 2 relays$"))
    relays = panel.locator('[data-parley="backup-relay"]')
    expect(relays).to_have_count(2)
    for r in relays.all():
        assert r.get_attribute("data-state") == "ok"
        assert re.search(r": backed up ", r.text_content() or "")
    sid = (st.get("standby") or {}).get("installation_id")
    standby = panel.locator('[data-parley="backup-standby"]')
    if sid:
        expect(standby).to_have_text(f"Standby installation: {sid}")
    else:
        expect(standby).to_have_text("No standby installation")
    assert not panel.locator('[data-parley="backup-setup"]').is_visible()
    assert panel.locator('[data-parley="backup-turn-off"]').is_visible()

    # The page's routes: a second key refused; a write without the CSRF token refused; a GET is the status.
    answers = inbox.evaluate("""async () => {
      const s = JSON.parse(sessionStorage.getItem('parley.inbox'));
      const post = (path, headers, body) => fetch(path, { method: 'POST', credentials: 'omit',
        headers: { 'Content-Type': 'application/json', 'X-Parley-Session': s.session, ...headers }, body: JSON.stringify(body) })
        .then(async (r) => [r.status, await r.json()]);
      return {
        again: await post('/api/backup/key', { 'X-Parley-CSRF': s.csrf }, {}),
        nocsrf: await post('/api/backup/remote', {}, { enabled: false }),
        nosession: await fetch('/api/backup', { credentials: 'omit' }).then((r) => r.status),
        storage: JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }),
        url: location.href,
      };
    }""")
    assert answers["again"] == [400, {"error": {"code": "exists", "message": "a recovery key exists"}}]
    assert answers["nocsrf"][0] == 403 and answers["nocsrf"][1]["error"]["code"] == "csrf"
    assert answers["nosession"] == 401
    assert env.status(env.alice)["enabled"] is True  # the refused write changed nothing
    key = env.notes["key"]
    for where in (answers["storage"], answers["url"]):
        assert key not in where and key.replace(" ", "") not in where
    popup.close()
    inbox.close()


# --- 4 -------------------------------------------------------------------------------------------


def test_4_the_inbox_page_runs_the_same_setup(env: Env, chromium: Browser) -> None:
    """Bob's bridge has no key yet: his inbox page (a plain browser, `parley open`'s link) sets it up."""
    link = parley(env.bob.home, "open", check=True).stdout.strip().splitlines()[-1]
    context = chromium.new_context()
    page = context.new_page()
    logged: list[str] = []
    page.on("console", lambda m: logged.append(m.text))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(link)
    panel = page.locator('[data-parley="backup"]')
    expect(panel.locator('[data-parley="backup-line"]')).to_have_text("Not set up", timeout=TIMEOUT_MS)
    panel.locator('[data-parley="backup-setup"]').click()
    expect(panel.locator('[data-parley="backup-ask-text"]')).to_contain_text("Anyone with it can read your history. Create it?")
    panel.locator('[data-parley="backup-create"]').click()
    groups = panel.locator('[data-parley="backup-key-group"]')
    expect(groups).to_have_count(16, timeout=TIMEOUT_MS)
    key = " ".join(groups.all_text_contents())
    panel.locator('[data-parley="backup-written"]').click()
    panel.locator('[data-parley="backup-typed"]').fill(_valid_other_key(key))
    panel.locator('[data-parley="backup-confirm"]').click()
    expect(panel.locator('[data-parley="backup-message"]')).to_contain_text("not the recovery key that was shown", timeout=TIMEOUT_MS)
    assert env.status(env.bob)["confirmed"] is False
    panel.locator('[data-parley="backup-typed"]').fill(key)
    panel.locator('[data-parley="backup-confirm"]').click()
    expect(panel.locator('[data-parley="backup-line"]')).to_have_text(re.compile(r"^Backed up .+ · 1 relay$"), timeout=BACKUP_WAIT_MS)
    st = env.status(env.bob)
    assert st["enabled"] is True and st["confirmed"] is True and [r["state"] for r in st["relays"]] == ["ok"]
    kept = page.evaluate("() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }) + location.href")
    canonical = key.replace(" ", "")
    for where in (kept, "\n".join(logged), "\n".join(requests), env.bob.output()):
        assert key not in where and canonical not in where
    context.close()
