// The popup (extension/popup/popup.html + popup.js + backup.js) in a jsdom document, with a fake
// worker behind chrome.runtime.sendMessage that keeps a backup state as the bridge does (contract:
// notes ISSUE15 §3, §8): a key is created once, kept only as its derivation (here: its squeezed
// form, to compare), confirmed only by the same key typed back, which turns the backup on.
// Not a test file itself: each popup test file opens one popup (a module instance is one popup).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
const CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';

export function newKey() {
  let out = '';
  for (let i = 0; i < 64; i += 1) out += CHARS[Math.floor(Math.random() * CHARS.length)];
  return out.match(/.{4}/g).join(' ');
}
const squeeze = (text) => String(text).toLowerCase().replace(/[\s-]/g, '');

/** The fake worker + bridge: `state` as the bridge keeps it; `log` every message the popup sent. */
export const fake = {
  state: { has_key: false, confirmed: false, enabled: false, derived: null, created_at: null, last_backup_at: null },
  log: [],
  stored: [], // every chrome.storage write the popup made
  status() {
    const s = this.state;
    return {
      enabled: s.enabled, has_key: s.has_key, confirmed: s.confirmed, key_created_at: s.created_at,
      last_backup_at: s.last_backup_at, size: s.last_backup_at ? 1_258_291 : 0, segments: s.last_backup_at ? 1 : 0,
      relays: [{ url: 'http://127.0.0.1:9001', state: s.last_backup_at ? 'ok' : 'pending', last_at: s.last_backup_at, error: null }],
      standby: { installation_id: null, created_at: null },
    };
  },
  answer(msg) {
    const s = this.state;
    switch (msg.type) {
      case 'parley/popup/get-state':
        return { status: 'connected', identity: { address: '0x1', did: 'did:pkh:1' }, unread: 0, bridgeUrl: 'http://127.0.0.1:8737', paired: true, requests: 0 };
      case 'parley/popup/backup-status':
        return { ok: true, status: this.status() };
      case 'parley/popup/backup-create-key': {
        if (s.has_key && !(msg.replace === true && !s.confirmed)) return { ok: false, error: 'a recovery key exists', reason: 'exists' };
        const key = newKey();
        Object.assign(s, { has_key: true, confirmed: false, enabled: false, derived: squeeze(key), created_at: Date.now() });
        return { ok: true, recoveryKey: key };
      }
      case 'parley/popup/backup-confirm-key':
        if (squeeze(msg.recoveryKey) !== s.derived) return { ok: false, error: 'this is not the recovery key that was shown', reason: 'mismatch' };
        Object.assign(s, { confirmed: true, enabled: true });
        return { ok: true, confirmed: true, enabled: true };
      case 'parley/popup/backup-set-remote':
        if (!s.confirmed) return { ok: false, error: 'confirm your recovery key first', reason: 'unconfirmed' };
        s.enabled = msg.enabled;
        return { ok: true, status: this.status() };
      default:
        return { ok: false, error: 'unknown message' };
    }
  },
};

/** Open the popup (imports popup.js once per process) and wait for its Backup line. */
export async function openPopup() {
  const html = readFileSync(new URL('../../extension/popup/popup.html', import.meta.url), 'utf8')
    .replace(/<script[^>]*><\/script>/g, '')
    .replace(/<link[^>]*>/g, '');
  const dom = new JSDOM(html, { url: `chrome-extension://${ID}/popup/popup.html`, pretendToBeVisual: true });
  const { window } = dom;
  Object.assign(globalThis, { window, document: window.document, location: window.location, HTMLElement: window.HTMLElement });
  const clipboard = { text: null, async writeText(text) { clipboard.text = text; } };
  Object.defineProperty(globalThis, 'navigator', { value: { clipboard, platform: 'test' }, configurable: true });
  const record = (area) => ({
    async get() { return {}; },
    async set(items) { fake.stored.push([area, JSON.stringify(items)]); },
    async remove() {},
    onChanged: { addListener() {} },
  });
  globalThis.chrome = {
    runtime: {
      id: ID,
      getURL: (path) => `chrome-extension://${ID}/${path}`,
      async sendMessage(msg) {
        fake.log.push(msg);
        return fake.answer(msg);
      },
    },
    storage: { local: record('local'), session: record('session') },
  };
  await import('../../extension/popup/popup.js');
  await until(() => $('backup').dataset.ready === 'true', 'the backup status shown');
  return { window, clipboard };
}

export const $ = (hook) => globalThis.document.querySelector(`[data-parley="${hook}"]`);
/** What a user sees: the element is there and neither it nor an ancestor is hidden. */
export function visible(hook) {
  for (let el = $(hook); el; el = el.parentElement) if (el.hidden) return false;
  return $(hook) !== null;
}
export const click = (hook) => $(hook).dispatchEvent(new globalThis.window.MouseEvent('click', { bubbles: true }));
export function submit(hook) {
  $(hook).dispatchEvent(new globalThis.window.Event('submit', { bubbles: true, cancelable: true }));
}

/** Wait until `cond()` holds (the popup's own timers run: its poll is every 2 s while a backup is awaited). */
export async function until(cond, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.fail(`never happened: ${what}`);
}

/** The key as the popup shows it right now (its groups joined by spaces), or '' when none is shown. */
export function shownKey() {
  return [...globalThis.document.querySelectorAll('[data-parley="backup-key-group"]')].map((g) => g.textContent).join(' ');
}

export const calls = (type) => fake.log.filter((m) => m.type === type);
