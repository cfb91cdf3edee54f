"""Extension latency in real Chromium against real bridges (issue 3, "Measured, not asserted").

Prints, as median and p90 over N runs (default 20), with a same-run baseline and the ratio:

1. anchor → DM button: from Hey's ``button[aria-label="Follow"]`` appearing (seen by a main-world
   MutationObserver) to the DM button being inserted, and to it turning ``ready`` (resolve +
   canMessage through worker → bridge → relay). Baseline: a plain main-world MutationObserver that
   inserts a span next to the anchor (the same DOM job with no extension in the way).
2. click → interactive widget: from the click on the DM button to the widget's composer being
   enabled (iframe load + resolve + canMessage + messages.list). Baseline: the same three calls as a
   raw authenticated WebSocket client to the bridge.
3. send → shown in the other user's widget: from Alice's click on Send to the text appearing in
   Bob's open widget (a MutationObserver in Bob's widget frame). Baseline: ``messages.send`` on a raw
   WebSocket to Alice's bridge until ``message.new`` arrives on a raw WebSocket to Bob's bridge.

Times in the browsers are ``performance.timeOrigin + performance.now()`` (one machine clock).

Usage: ``.venv/bin/python bench/extension.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import Frame, Page, expect  # noqa: E402

from e2e.demo import ALICE_FID, TIMEOUT_MS, Bridge, RawWs, World, open_dm, pair_via_popup, widget, world  # noqa: E402
from tests.procs import parley  # noqa: E402

__all__ = ["main", "summarise"]

NOW = "performance.timeOrigin + performance.now()"

ANCHOR_PROBE = """
(() => {
  const t = { anchor: null, baseline: null, button: null, ready: null };
  Object.defineProperty(window, '__bench', { value: t });
  const now = () => performance.timeOrigin + performance.now();
  // The recorder: when each thing first becomes visible to page scripts.
  new MutationObserver(() => {
    if (t.anchor === null && document.querySelector('button[aria-label="Follow"]')) t.anchor = now();
    if (t.baseline === null && document.querySelector('[data-bench="baseline"]')) t.baseline = now();
    const b = document.querySelector('[data-parley="dm-button"]');
    if (b && t.button === null) t.button = now();
    if (b && t.ready === null && b.getAttribute('data-parley-state') === 'ready') t.ready = now();
  }).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-parley-state'] });
  // The baseline injector: a plain observer doing the DM button's DOM job.
  new MutationObserver((_, obs) => {
    const follow = document.querySelector('button[aria-label="Follow"]');
    if (!follow) return;
    const span = document.createElement('span');
    span.dataset.bench = 'baseline';
    follow.after(span);
    obs.disconnect();
  }).observe(document, { childList: true, subtree: true });
})();
"""


def summarise(name: str, values: list[float], baseline: list[float]) -> str:
    def p90(xs: list[float]) -> float:
        return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]

    med, base = statistics.median(values), statistics.median(baseline)
    ratio = med / base if base > 0 else float("inf")
    return f"| {name:<42} | {med:8.1f} | {p90(values):8.1f} | {base:8.2f} | {p90(baseline):8.2f} | {ratio:7.1f}x |"


def extension_frame(page: Page, origin: str) -> Frame:
    """The widget iframe's frame, once it has navigated to the extension page."""
    handle = page.locator('iframe[data-parley="widget"]').element_handle(timeout=TIMEOUT_MS)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        frame = handle.content_frame()
        if frame is not None and frame.url.startswith(origin):
            return frame
        page.wait_for_timeout(2)
    raise RuntimeError("no widget frame")


def raw_client(bridge: Bridge, origin: str) -> RawWs:
    code = json.loads(parley(bridge.home, "pair", "--json", check=True).stdout)["code"]
    ws = RawWs(bridge.port, f"127.0.0.1:{bridge.port}", origin)
    reply = ws.rpc("pair", {"code": code, "name": "bench"})
    if "result" not in reply:
        raise RuntimeError(f"pairing the raw client failed: {reply}")
    return ws


def bench_anchor(wd: World, runs: int) -> tuple[list[float], list[float], list[float]]:
    page = wd.alice_browser.context.new_page()
    page.add_init_script(ANCHOR_PROBE)
    inserted, ready, base = [], [], []
    for i in range(runs):
        page.goto(wd.replicas.url("hey.xyz", f"/u/bob?delay=300&run={i}"))
        t = page.wait_for_function("() => window.__bench.ready !== null && window.__bench.baseline !== null && window.__bench", timeout=TIMEOUT_MS).json_value()
        inserted.append(t["button"] - t["anchor"])
        ready.append(t["ready"] - t["anchor"])
        base.append(t["baseline"] - t["anchor"])
    page.close()
    return inserted, ready, base


def bench_widget(wd: World, runs: int) -> tuple[list[float], list[float]]:
    origin = wd.alice_browser.extension_origin
    page = wd.alice_browser.context.new_page()
    page.goto(wd.replicas.url("hey.xyz", "/u/bob"))
    open_dm(page, "lens:bob")  # warm up: the worker and the first lookups
    values: list[float] = []
    for _ in range(runs):
        page.locator('[data-parley="widget-close"]').click()
        expect(page.locator('iframe[data-parley="widget"]')).to_have_count(0)
        t0 = page.evaluate(f"""() => new Promise((resolve) => {{
          const b = document.querySelector('[data-parley="dm-button"]');
          const t = {NOW}; b.click(); resolve(t); }})""")
        frame = extension_frame(page, origin)
        t1 = frame.wait_for_function(
            f"() => {{ const c = document.querySelector('[data-parley=\"composer\"]'); return c && !c.disabled && ({NOW}); }}",
            polling="raf", timeout=TIMEOUT_MS,
        ).json_value()
        values.append(t1 - t0)
    page.close()
    ws = raw_client(wd.alice, origin)
    base: list[float] = []
    rid = 10
    for _ in range(runs):
        t0 = time.perf_counter()
        addr = ws.rpc("resolve", {"peer": "lens:bob"}, rid=rid)["result"]["address"]  # type: ignore[index]
        ws.rpc("canMessage", {"address": addr}, rid=rid + 1)
        ws.rpc("messages.list", {"peer": addr, "limit": 50}, rid=rid + 2)
        base.append((time.perf_counter() - t0) * 1000)
        rid += 3
    ws.close()
    return values, base


def bench_delivery(wd: World, runs: int) -> tuple[list[float], list[float]]:
    a_page = wd.alice_browser.context.new_page()
    a_page.goto(wd.replicas.url("orb.club", "/@bob"))
    open_dm(a_page, "lens:bob")
    b_page = wd.bob_browser.context.new_page()
    b_page.goto(wd.replicas.url("firefly.social", f"/profile/farcaster/{ALICE_FID}"))
    open_dm(b_page, f"farcaster:{ALICE_FID}")
    a_frame = extension_frame(a_page, wd.alice_browser.extension_origin)
    b_frame = extension_frame(b_page, wd.bob_browser.extension_origin)
    values: list[float] = []
    for i in range(runs):
        text = f"bench message {i} {time.time_ns()}"
        b_frame.evaluate(
            f"""(text) => {{ window.__seen = null; new MutationObserver((_, obs) => {{
              for (const m of document.querySelectorAll('[data-parley="message"]')) if (m.textContent === text) {{ window.__seen = {NOW}; obs.disconnect(); }}
            }}).observe(document.body, {{ childList: true, subtree: true }}); }}""",
            text,
        )
        t0 = a_frame.evaluate(
            f"""(text) => {{ const c = document.querySelector('[data-parley="composer"]'); c.value = text;
              const t = {NOW}; document.querySelector('[data-parley="send"]').click(); return t; }}""",
            text,
        )
        t1 = b_frame.wait_for_function("() => window.__seen", timeout=TIMEOUT_MS).json_value()
        values.append(t1 - t0)
        # Bob may see it before Alice's messages.send answer re-enables her Send button.
        expect(widget(a_page).locator('[data-parley="send"]')).to_be_enabled()
    a_page.close()
    b_page.close()
    a_ws = raw_client(wd.alice, wd.alice_browser.extension_origin)
    b_ws = raw_client(wd.bob, wd.bob_browser.extension_origin)
    base: list[float] = []
    send_ms: list[float] = []
    for i in range(runs):
        text = f"raw bench {i} {time.time_ns()}"
        request = {"jsonrpc": "2.0", "id": 100 + i, "method": "messages.send", "params": {"peer": wd.bob.address, "text": text}}
        t0 = time.perf_counter()
        a_ws.send_text(json.dumps(request))  # do not wait for Alice's answer: the widget does not either
        while True:
            msg = b_ws.notes.pop(0) if b_ws.notes else b_ws.next_json()
            if msg.get("method") == "message.new" and msg["params"]["message"]["text"] == text:  # type: ignore[index]
                break
        base.append((time.perf_counter() - t0) * 1000)
        send_ms.append((time.perf_counter() - t0) * 1000)
        while a_ws.next_json().get("id") != 100 + i:
            pass
        send_ms[-1] = (time.perf_counter() - t0) * 1000
    a_ws.close()
    b_ws.close()
    print(f"(raw messages.send answered after median {statistics.median(send_ms):.1f} ms)")
    return values, base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with world() as wd:
        pair_via_popup(wd.alice_browser, wd.alice)
        pair_via_popup(wd.bob_browser, wd.bob)
        inserted, ready, anchor_base = bench_anchor(wd, args.runs)
        widget_times, widget_base = bench_widget(wd, args.runs)
        delivery, delivery_base = bench_delivery(wd, args.runs)
    print(f"Parley extension bench: {args.runs} runs each, headless Chromium, real relay + 2 bridges (ms)")
    print(f"| {'measure':<42} | {'median':>8} | {'p90':>8} | {'base med':>8} | {'base p90':>8} | {'ratio':>8} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 9}|")
    print(summarise("anchor -> DM button inserted", inserted, anchor_base))
    print(summarise("anchor -> DM button ready (resolve+canMsg)", ready, anchor_base))
    print(summarise("click -> widget composer enabled", widget_times, widget_base))
    print(summarise("send -> shown in the other user's widget", delivery, delivery_base))
    print("baselines: anchor = plain page MutationObserver inserting a span; widget = resolve+canMessage+")
    print("messages.list on a raw WebSocket; delivery = raw messages.send -> raw message.new on the peer's bridge")
    print(f"total {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
