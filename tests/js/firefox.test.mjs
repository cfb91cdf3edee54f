// Issue 11: the Firefox build (scripts/build-firefox.mjs) and what differs in Firefox at run time.
// The real Firefox run is e2e/test_firefox.py; these are the cheap checks of the same facts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { JSDOM } from 'jsdom';

import { GECKO_ID, build, chromeManifest, firefoxManifest, readManifest, shippedFiles } from '../../scripts/build-firefox.mjs';

const UUID = '0b7c9f3e-5a41-4d2b-9c8e-2f6a1d3b4c5e';

test("Firefox's manifest: background.scripts (same ES module), gecko id, min version 140, no Chrome-only keys", () => {
  const source = readManifest();
  const ff = firefoxManifest(source);
  assert.deepEqual(ff.background, { scripts: [source.background.service_worker], type: 'module' });
  assert.equal(ff.browser_specific_settings.gecko.id, GECKO_ID);
  assert.equal(ff.browser_specific_settings.gecko.strict_min_version, '140.0');
  assert.deepEqual(ff.browser_specific_settings.gecko.data_collection_permissions, { required: ['none'] });
  assert.equal('key' in ff, false);
  assert.equal('minimum_chrome_version' in ff, false);
  // everything else is Chrome's manifest unchanged
  for (const name of ['manifest_version', 'version', 'permissions', 'content_scripts', 'web_accessible_resources', 'content_security_policy', 'action']) {
    assert.deepEqual(ff[name], source[name], name);
  }
  const chrome = chromeManifest(source);
  assert.equal('key' in chrome, false, 'the store assigns its own id');
  assert.deepEqual({ ...chrome, key: source.key }, source);
});

/** [name, bytes] of every entry of a zip (stored or deflated), read from its central directory. */
function unzip(buf) {
  const end = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = buf.readUInt16LE(end + 10);
  let at = buf.readUInt32LE(end + 16);
  const out = new Map();
  for (let i = 0; i < count; i++) {
    assert.equal(buf.readUInt32LE(at), 0x02014b50);
    const method = buf.readUInt16LE(at + 10);
    const size = buf.readUInt32LE(at + 20);
    const nameLen = buf.readUInt16LE(at + 28);
    const extra = buf.readUInt16LE(at + 30) + buf.readUInt16LE(at + 32);
    const local = buf.readUInt32LE(at + 42);
    const name = buf.toString('utf8', at + 46, at + 46 + nameLen);
    const dataAt = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(dataAt, dataAt + size);
    out.set(name, method === 8 ? inflateRawSync(raw) : raw);
    at += 46 + nameLen + extra;
  }
  return out;
}

test('make package: both zips hold the shipped files, the right manifests, and are reproducible', () => {
  const dir = mkdtempSync(join(tmpdir(), 'parley-dist-'));
  try {
    const version = readManifest().version;
    const first = build({ pack: true, dist: dir });
    const names = first.map((item) => item.path.slice(dir.length + 1));
    assert.deepEqual(names, ['firefox', `parley-chrome-${version}.zip`, `parley-firefox-${version}.zip`]);
    const files = shippedFiles();
    assert.ok(files.includes('content/dist/content.js') && files.includes('background/index.js'));
    assert.ok(!files.some((f) => f.startsWith('content/core/') || f === 'EXTENSION_ID'), 'sources of the bundle stay out');
    const chrome = unzip(readFileSync(join(dir, `parley-chrome-${version}.zip`)));
    const firefox = unzip(readFileSync(join(dir, `parley-firefox-${version}.zip`)));
    assert.deepEqual([...chrome.keys()], files);
    assert.deepEqual([...firefox.keys()], files);
    assert.equal('key' in JSON.parse(chrome.get('manifest.json')), false);
    assert.equal(JSON.parse(firefox.get('manifest.json')).browser_specific_settings.gecko.id, GECKO_ID);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'firefox', 'manifest.json'))), firefoxManifest());
    assert.deepEqual(chrome.get('background/bridge.js'), readFileSync(new URL('../../extension/background/bridge.js', import.meta.url)));
    const again = build({ pack: true, dist: dir });
    assert.deepEqual(again.map((item) => item.sha256), first.map((item) => item.sha256));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Firefox: the widget nonce is posted to moz-extension://<uuid>, not to the add-on id', async () => {
  const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'https://hey.xyz/u/bob' });
  globalThis.window = dom.window;
  globalThis.document = dom.window.document;
  globalThis.chrome = {
    runtime: {
      id: GECKO_ID, // Firefox: the add-on id; the origin's host is a UUID per install
      getURL: (path) => `moz-extension://${UUID}/${path}`,
      sendMessage: async () => ({ nonce: 'n'.repeat(32) }),
    },
  };
  const { openWidget, extensionOrigin } = await import('../../extension/content/core/widget.js');
  assert.equal(extensionOrigin(), `moz-extension://${UUID}`);
  const frame = openWidget('lens:bob');
  const posts = [];
  Object.defineProperty(frame, 'contentWindow', { value: { postMessage: (...args) => posts.push(args) } });
  frame.dispatchEvent(new dom.window.Event('load'));
  for (let i = 0; i < 10; i += 1) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(posts.length, 1);
  assert.equal(posts[0][1], `moz-extension://${UUID}`);
});
