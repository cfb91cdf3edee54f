// The committed content-script bundle is what the sources build to (issue 8 item 7). Needs the pinned
// esbuild from `npm ci`; a stale bundle (sources changed, `make content` not run) fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { OUTFILE, bundle } from '../../scripts/build-content.mjs';

test('extension/content/dist/content.js is a fresh build of extension/content/entry.js', async () => {
  const fresh = await bundle();
  assert.ok(readFileSync(OUTFILE, 'utf8') === fresh, 'stale bundle: run `make content` and commit extension/content/dist/content.js');
});

test('the bundle is one classic script: no import/export, no extension-relative module loading', () => {
  const text = readFileSync(OUTFILE, 'utf8');
  assert.doesNotMatch(text, /^\s*(import|export)\s/m);
  assert.doesNotMatch(text, /import\(/);
  assert.doesNotMatch(text, /getURL\(['"](content|common)\//);
});
