// Static checks over the extension source (DESIGN.md "Extension"): no HTML-string DOM building,
// manifest shape (fixed key → EXTENSION_ID, widget web-accessible to the three sites only, strict CSP).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const EXT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'extension');
const SITE_MATCHES = ['https://hey.xyz/*', 'https://orb.club/*', 'https://orb.ac/*', 'https://firefly.social/*'];

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

test('no innerHTML / outerHTML / insertAdjacentHTML / document.write / eval anywhere in the extension', () => {
  const banned = /\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\s*\(|new Function\s*\()/;
  const files = walk(EXT).filter((p) => /\.(js|mjs|html)$/.test(p));
  assert.ok(files.length > 10, 'extension sources found');
  for (const file of files) {
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => assert.doesNotMatch(line, banned, `${file}:${i + 1}`));
  }
});

test('manifest key gives the id in EXTENSION_ID', () => {
  const manifest = JSON.parse(readFileSync(join(EXT, 'manifest.json'), 'utf8'));
  const digest = createHash('sha256').update(Buffer.from(manifest.key, 'base64')).digest('hex').slice(0, 32);
  const id = [...digest].map((c) => String.fromCharCode(97 + parseInt(c, 16))).join('');
  assert.equal(readFileSync(join(EXT, 'EXTENSION_ID'), 'utf8').trim(), id);
});

test('manifest: MV3, module worker, sites-only content scripts and web-accessible resources, strict CSP', () => {
  const m = JSON.parse(readFileSync(join(EXT, 'manifest.json'), 'utf8'));
  assert.equal(m.manifest_version, 3);
  assert.equal(m.minimum_chrome_version, '137'); // WebCrypto Ed25519 (the bridge's proof) and IntersectionObserver v2
  assert.deepEqual(m.background, { service_worker: 'background/index.js', type: 'module' });
  for (const cs of m.content_scripts) assert.deepEqual([...cs.matches].sort(), [...SITE_MATCHES].sort());
  // Only the isolated bundle: nothing of ours runs in the page's MAIN world, and no wallet code is on
  // the sites at all (issue 8 item 1: sign-in happens on the bridge's own page).
  assert.deepEqual(m.content_scripts.map((c) => [c.js.join(), c.world ?? 'ISOLATED']),
    [['content/dist/content.js', 'ISOLATED']]);
  for (const war of m.web_accessible_resources) {
    assert.deepEqual([...war.matches].sort(), [...SITE_MATCHES].sort());
    assert.ok(!war.resources.some((r) => r.startsWith('popup/') || r.startsWith('background/')), 'popup/worker not exposed');
  }
  // Only the widget is web-accessible (issue 8 item 7): any other file lets every site fingerprint us.
  assert.deepEqual(m.web_accessible_resources.flatMap((w) => w.resources), ['widget/widget.html']);
  assert.equal(m.host_permissions, undefined, 'no host permissions are needed');
  assert.deepEqual([...m.permissions].sort(), ['alarms', 'notifications', 'storage']);
  const csp = m.content_security_policy.extension_pages;
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.match(csp, /object-src 'none'/);
  assert.doesNotMatch(csp, /unsafe-(inline|eval)/);
  for (const file of m.web_accessible_resources.flatMap((w) => w.resources).filter((r) => !r.includes('*'))) {
    assert.ok(statSync(join(EXT, file)).isFile(), file);
  }
});

test('no wallet code on the sites: no MAIN-world script, no window.postMessage wallet channel', () => {
  const walk = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
  const content = walk(join(EXT, 'content')).filter((f) => f.endsWith('.js'));
  for (const file of content) {
    const text = readFileSync(file, 'utf8');
    assert.doesNotMatch(text, /eip6963|window\.ethereum|personal_sign|parley-wallet/, file);
  }
  assert.ok(!content.some((f) => /wallet/.test(f.slice(EXT.length))), 'no wallet content script');
});
