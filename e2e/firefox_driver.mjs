// The Firefox half of e2e/test_firefox.py (issue 11): Debian's Firefox ESR, headless, driven over
// WebDriver BiDi by puppeteer-core (package.json), with the Firefox build (dist/firefox/) installed as
// a temporary add-on through BiDi's webExtension.install.
//
//   node e2e/firefox_driver.mjs '<json options>'
//
// Options: firefox (executable), extensionDir, uuid (the moz-extension UUID, set through the
// extensions.webextensions.uuids pref so the test knows the origin the bridge must pin), geckoId,
// proxyPort (an HTTP CONNECT proxy that maps the site hosts onto the replica server), bridgeUrl,
// code (from `parley pair`), profileUrl, peer, text, reply, timeoutMs, shots (a directory or "").
//
// It prints one JSON object per line: {"step": ...} as the scenario advances, {"error": ...} when a
// step fails (then exits 1). After {"step": "sent"} it waits for `reply` (which the test has Bob's
// bridge send) to arrive in the widget window and the framed widget.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const opts = JSON.parse(process.argv[2] ?? '{}');
const TIMEOUT = opts.timeoutMs ?? 20000;
const BUTTON = '[data-parley="dm-button"]';

function say(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function shot(page, name) {
  if (!opts.shots) return;
  mkdirSync(opts.shots, { recursive: true });
  await page.screenshot({ path: join(opts.shots, `${name}.png`) });
}

async function text(frame, selector) {
  return frame.$eval(selector, (el) => el.textContent.trim());
}

async function main() {
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: opts.firefox,
    headless: true,
    acceptInsecureCerts: true, // the replica server's certificate is self-signed
    // WebDriver BiDi navigates only to http(s)/file/blob unless system access is allowed; the popup
    // is a moz-extension:// page (Firefox's toolbar button cannot be clicked over BiDi).
    args: ['--remote-allow-system-access'],
    extraPrefsFirefox: {
      'extensions.webextensions.uuids': JSON.stringify({ [opts.geckoId]: opts.uuid }),
      'network.proxy.type': 1,
      'network.proxy.ssl': '127.0.0.1',
      'network.proxy.ssl_port': opts.proxyPort,
      'network.proxy.http': '127.0.0.1',
      'network.proxy.http_port': opts.proxyPort,
      'network.proxy.no_proxies_on': '',
      'network.proxy.allow_hijacking_localhost': false, // the bridge on 127.0.0.1 is reached directly
      'network.dns.disableIPv6': true,
    },
  });
  try {
    const id = await browser.installExtension(opts.extensionDir);
    say({ step: 'installed', id, version: await browser.version() });
    const origin = `moz-extension://${opts.uuid}`;

    // Pairing through the popup page, as a user does (the popup opened as a tab).
    const popup = await browser.newPage();
    const popupUrl = `${origin}/popup/popup.html`;
    // Firefox moves the tab into the extension process: puppeteer's navigation promise then rejects
    // ("Frame detached") although the tab shows the page; wait for the page itself instead.
    popup.goto(popupUrl, { waitUntil: 'domcontentloaded', timeout: TIMEOUT }).catch(() => {});
    await popup.waitForFunction((u) => location.href === u && document.readyState !== 'loading', { timeout: TIMEOUT, polling: 100 }, popupUrl);
    await popup.waitForSelector('[data-parley="bridge-url"]', { timeout: TIMEOUT });
    await popup.$eval('[data-parley="bridge-url"]', (el) => { el.value = ''; });
    await popup.type('[data-parley="bridge-url"]', opts.bridgeUrl);
    await popup.type('[data-parley="pair-code"]', opts.code);
    await popup.click('[data-parley="pair-submit"]');
    try {
      await popup.waitForFunction(
        () => /connected/.test(document.querySelector('[data-parley="status"]')?.textContent ?? ''),
        { timeout: TIMEOUT },
      );
    } catch (error) {
      const shown = await text(popup, '[data-parley="error"]').catch(() => '');
      const status = await text(popup, '[data-parley="status"]').catch(() => '');
      throw new Error(`pairing: status ${JSON.stringify(status)}, error ${JSON.stringify(shown)} (${error.message})`, { cause: error });
    }
    await popup.waitForFunction(() => /^0x[0-9a-fA-F]{40}$/.test(document.querySelector('[data-parley="address"]')?.textContent ?? ''), { timeout: TIMEOUT });
    say({ step: 'paired', status: await text(popup, '[data-parley="status"]'), address: await text(popup, '[data-parley="address"]') });
    await shot(popup, 'firefox-1-paired-popup');

    // Attack: widget.html opened top level (a page can: it is web-accessible, and the iframe's src
    // tells its UUID) with a made-up window nonce. The worker refuses it.
    const forged = await browser.newPage();
    forged.goto(`${origin}/widget/widget.html?peer=lens%3Abob#w=${'a'.repeat(32)}`).catch(() => {});
    await forged.waitForFunction(() => document.body?.dataset.parleyGate === 'refused', { timeout: TIMEOUT, polling: 100 });
    say({ step: 'forged-window', gate: 'refused', actionable: await forged.evaluate(() => document.body.dataset.parleyActionable ?? null) });
    await forged.close();

    // The DM button on a replica profile page.
    const page = await browser.newPage();
    await page.goto(opts.profileUrl);
    await page.waitForSelector(`${BUTTON}[data-parley-state="ready"]`, { timeout: TIMEOUT });
    say({ step: 'button', peer: await page.$eval(BUTTON, (el) => el.getAttribute('data-parley-peer')), label: await text(page, BUTTON) });
    await shot(page, 'firefox-2-dm-button');
    await page.click(BUTTON);
    // The widget iframe loads in the extension's process; puppeteer's frame keeps its first URL
    // (about:blank) after the switch, so it is found through its element and checked from inside.
    const iframe = await page.waitForSelector('iframe[data-parley="widget"]', { timeout: TIMEOUT });
    const frame = await iframe.contentFrame();
    const widgetUrl = `${origin}/widget/widget.html`;
    await frame.waitForFunction((u) => location.href.startsWith(u), { timeout: TIMEOUT, polling: 100 }, widgetUrl);
    await frame.waitForSelector('[data-parley="composer"]:not([disabled])', { timeout: TIMEOUT }).catch(async (error) => {
      const shown = await frame.evaluate(() => document.body.innerText).catch((e) => `(unreadable: ${e.message})`);
      throw new Error(`the widget's composer stayed disabled; the widget shows ${JSON.stringify(shown)} (${error.message})`, { cause: error });
    });
    // Firefox 153 has no IntersectionObserver v2 (isVisible/trackVisibility): the widget's clickjacking
    // guard (extension/widget/widget.js) then never lets it act. Record what it does with a send.
    await frame.waitForSelector('body[data-parley-visible]', { timeout: TIMEOUT });
    const guard = await frame.evaluate(() => ({
      visible: document.body.dataset.parleyVisible,
      actionable: document.body.dataset.parleyActionable,
      ioV2: 'isVisible' in IntersectionObserverEntry.prototype,
      storageSession: typeof chrome.storage.session, // Firefox: undefined in an extension frame in a web page
    }));
    say({ step: 'widget', url: await frame.evaluate(() => location.origin + location.pathname), ...guard });
    await frame.type('[data-parley="composer"]', opts.text);
    await frame.click('[data-parley="send"]');
    await frame.waitForSelector('body[data-parley-refused]', { timeout: TIMEOUT });
    say({
      step: 'send-refused',
      refused: await frame.evaluate(() => document.body.dataset.parleyRefused),
      out: await frame.evaluate(() => document.querySelectorAll('[data-parley="message"][data-direction="out"]').length),
    });
    await shot(page, 'firefox-3-send-refused');

    // ... and offers a window of the worker's own, where the widget may act (widgets.js popOut).
    const before = new Set(await browser.pages());
    await frame.waitForSelector('[data-parley="popout"]', { timeout: TIMEOUT }).catch(async (error) => {
      const state = await frame.evaluate(() => `gate=${document.body.dataset.parleyGate} top=${window.top === window} html=${document.body.innerHTML.slice(0, 1500)}`);
      throw new Error(`no "Open in a window" button: ${state}`, { cause: error });
    });
    await frame.click('[data-parley="popout"]');
    let win = null;
    const until = Date.now() + TIMEOUT;
    while (!win && Date.now() < until) {
      win = (await browser.pages()).find((p) => !before.has(p)) ?? null;
      if (!win) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (!win) throw new Error('no window opened for the conversation');
    await win.waitForFunction((u) => location.href.startsWith(u), { timeout: TIMEOUT, polling: 100 }, widgetUrl);
    await win.waitForSelector('[data-parley="composer"]:not([disabled])', { timeout: TIMEOUT });
    await win.waitForSelector('body[data-parley-actionable="true"]', { timeout: TIMEOUT });
    say({ step: 'window', url: await win.evaluate(() => location.href), top: await win.evaluate(() => window.top === window) });
    await win.type('[data-parley="composer"]', opts.text);
    await win.click('[data-parley="send"]');
    const has = (where, direction, wanted) => where.waitForFunction(
      (dir, t) => [...document.querySelectorAll(`[data-parley="message"][data-direction="${dir}"]`)].some((m) => m.textContent.includes(t)),
      { timeout: TIMEOUT }, direction, wanted,
    );
    await has(win, 'out', opts.text);
    say({ step: 'sent' });
    await shot(win, 'firefox-4-sent-from-window');

    // Bob's bridge replies: the window and the framed widget both show it.
    await has(win, 'in', opts.reply);
    await has(frame, 'in', opts.reply);
    say({ step: 'received' });
    await shot(page, 'firefox-5-reply-in-frame');
  } finally {
    await browser.close();
  }
}

main().then(
  () => { say({ step: 'done' }); process.exit(0); },
  (error) => { say({ error: String(error?.stack ?? error) }); process.exit(1); },
);
