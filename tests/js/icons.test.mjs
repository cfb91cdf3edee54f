// The extension's icons (issue 11: "real icons at 16, 48 and 128 px"): every icon the manifest names
// exists at the size it is declared for and shows the Parley mark (scripts/make_icons.py): a purple
// speech bubble with a white "P" on a transparent background, not a placeholder disc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';

const EXT = new URL('../../extension/', import.meta.url);
const manifest = JSON.parse(readFileSync(new URL('manifest.json', EXT), 'utf8'));

/** Decode an 8-bit RGBA, non-interlaced PNG into {width, height, pixels: Uint8Array (RGBA)}. */
function decodePng(bytes) {
  assert.deepEqual([...bytes.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], 'PNG signature');
  let offset = 8;
  let header = null;
  const data = [];
  while (offset < bytes.length) {
    const length = bytes.readUInt32BE(offset);
    const type = bytes.toString('latin1', offset + 4, offset + 8);
    const body = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') header = { width: body.readUInt32BE(0), height: body.readUInt32BE(4), depth: body[8], color: body[9], interlace: body[12] };
    if (type === 'IDAT') data.push(body);
    offset += 12 + length;
  }
  assert.ok(header, 'IHDR');
  assert.deepEqual([header.depth, header.color, header.interlace], [8, 6, 0], '8-bit RGBA, not interlaced');
  const raw = inflateSync(Buffer.concat(data));
  const stride = header.width * 4;
  const pixels = new Uint8Array(header.height * stride);
  for (let y = 0; y < header.height; y += 1) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x += 1) {
      const a = x >= 4 ? pixels[y * stride + x - 4] : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x] : 0;
      const c = x >= 4 && y > 0 ? pixels[(y - 1) * stride + x - 4] : 0;
      const p = a + b - c;
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c;
      const predictor = [0, a, b, (a + b) >> 1, paeth][filter];
      assert.notEqual(predictor, undefined, `filter ${filter}`);
      pixels[y * stride + x] = (line[x] + predictor) & 0xff;
    }
  }
  return { width: header.width, height: header.height, pixels };
}

function declared() {
  const out = [];
  for (const [where, icons] of [['icons', manifest.icons], ['action.default_icon', manifest.action?.default_icon]]) {
    assert.ok(icons && typeof icons === 'object', `manifest ${where}`);
    for (const [size, path] of Object.entries(icons)) out.push({ where, size: Number(size), path });
  }
  return out;
}

test('the manifest names icons at 16, 48 and 128 px, for the extension and its toolbar button', () => {
  assert.deepEqual(Object.keys(manifest.icons).map(Number).sort((x, y) => x - y), [16, 48, 128]);
  assert.ok(Object.keys(manifest.action.default_icon).map(Number).includes(16));
});

test('every icon is a PNG of its declared size showing the Parley mark', () => {
  for (const { where, size, path } of declared()) {
    const { width, height, pixels } = decodePng(readFileSync(new URL(path, EXT)));
    assert.deepEqual([width, height], [size, size], `${where} ${size}: ${path}`);
    let transparent = 0; let purple = 0; let white = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      const [r, g, b, alpha] = pixels.subarray(i, i + 4);
      if (alpha < 16) transparent += 1;
      else if (alpha > 200 && r > 220 && g > 220 && b > 220) white += 1;
      else if (alpha > 200 && Math.abs(r - 0x58) < 24 && Math.abs(g - 0x46) < 24 && Math.abs(b - 0xdc) < 24) purple += 1;
    }
    const n = width * height;
    assert.equal(pixels[3], 0, `${path}: a transparent corner`);
    assert.ok(transparent / n > 0.05, `${path}: the bubble's outline is cut out (${transparent}/${n} transparent)`);
    assert.ok(purple / n > 0.35, `${path}: a purple bubble (${purple}/${n})`);
    assert.ok(white / n > 0.08, `${path}: a white mark in it (${white}/${n})`);
  }
});
