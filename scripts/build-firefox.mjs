// Build the browser packages from the one source tree extension/ (issue 11):
//
//   node scripts/build-firefox.mjs                 dist/firefox/ (unpacked, for Firefox) from extension/
//   node scripts/build-firefox.mjs --package       also dist/parley-firefox-<version>.zip and
//                                                  dist/parley-chrome-<version>.zip (`make package`)
//   ... --out DIR                                  write into DIR instead of dist/ (tests)
//
// Firefox's manifest is Chrome's with:
//   - background.scripts instead of background.service_worker: Firefox runs the same ES module
//     entry as an event page (it has no extension service workers; web-ext lint warns on the key);
//   - browser_specific_settings.gecko: a fixed add-on id, strict_min_version 140 and
//     data_collection_permissions (nothing is collected);
//   - no `key` and no `minimum_chrome_version` (Chrome-only keys).
// The Chrome zip is extension/ without `key`: the store gives the extension its own id, which the
// bridge accepts once it is listed in the `extension_ids` setting (README).
//
// The output is deterministic: files in sorted order, fixed timestamps, no absolute paths.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateRawSync } from 'node:zlib';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const SOURCE = join(ROOT, 'extension');
export const DIST = join(ROOT, 'dist');
/** The add-on id Firefox knows Parley by (AMO signs under it). */
export const GECKO_ID = 'parley@parley.invalid';
export const GECKO_MIN_VERSION = '140.0';
export const GECKO_ANDROID_MIN_VERSION = '142.0';

/** Files of extension/ that ship: everything except the content scripts' sources (the bundle ships). */
export function shippedFiles(dir = SOURCE) {
  const out = [];
  const walk = (d) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      const rel = relative(dir, path).split(sep).join('/');
      if (statSync(path).isDirectory()) {
        walk(path);
      } else if (!rel.startsWith('content/') || rel.startsWith('content/dist/')) {
        if (rel !== 'EXTENSION_ID') out.push(rel);
      }
    }
  };
  walk(dir);
  return out;
}

export function readManifest() {
  return JSON.parse(readFileSync(join(SOURCE, 'manifest.json'), 'utf8'));
}

/** Chrome's store manifest: the source manifest without `key` (the store assigns the id). */
export function chromeManifest(source = readManifest()) {
  const out = { ...source };
  delete out.key;
  return out;
}

/** Firefox's manifest (see the header). */
export function firefoxManifest(source = readManifest()) {
  const { background, ...rest } = source;
  delete rest.key;
  delete rest.minimum_chrome_version;
  if (!background || typeof background.service_worker !== 'string') throw new Error('manifest.json: background.service_worker is missing');
  const out = {};
  const firefoxBackground = { scripts: [background.service_worker], ...(background.type ? { type: background.type } : {}) };
  for (const [name, value] of Object.entries(rest)) {
    out[name] = value;
    if (name === 'action') out.background = firefoxBackground;
  }
  out.background ??= firefoxBackground;
  out.browser_specific_settings = {
    gecko: {
      id: GECKO_ID,
      strict_min_version: GECKO_MIN_VERSION,
      data_collection_permissions: { required: ['none'] },
    },
    // Firefox for Android reads data_collection_permissions from 142 on.
    gecko_android: { strict_min_version: GECKO_ANDROID_MIN_VERSION },
  };
  return out;
}

function writeTree(target, manifest) {
  rmSync(target, { recursive: true, force: true });
  for (const rel of shippedFiles()) {
    const to = join(target, ...rel.split('/'));
    mkdirSync(dirname(to), { recursive: true });
    writeFileSync(to, rel === 'manifest.json' ? `${JSON.stringify(manifest, null, 2)}\n` : readFileSync(join(SOURCE, ...rel.split('/'))));
  }
}

// --- a small deterministic zip writer (deflate, fixed 1980-01-01 timestamps) ----------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** `entries`: [[name, Buffer]]; returns the zip file's bytes. */
export function zip(entries) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBuf = Buffer.from(name, 'utf8');
    const packed = deflateRawSync(data, { level: 9 });
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt16LE(0, 10); // time
    local.writeUInt16LE(0x21, 12); // date: 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(packed.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(0x0314, 4); // made by: unix, 2.0
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(packed.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBuf.length, 28);
    central.writeUInt32LE((0o100644 << 16) >>> 0, 38); // -rw-r--r--
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBuf, packed);
    centrals.push(central, nameBuf);
    offset += local.length + nameBuf.length + packed.length;
  }
  const dir = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(dir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, dir, end]);
}

function packageZip(manifest, dist, name) {
  const entries = shippedFiles().map((rel) => [
    rel,
    rel === 'manifest.json' ? Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`) : readFileSync(join(SOURCE, ...rel.split('/'))),
  ]);
  const bytes = zip(entries);
  const path = join(dist, name);
  writeFileSync(path, bytes);
  return { path, sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
}

/** Write `dist`/firefox/ (and with `pack` the two zips); returns what was written. */
export function build({ pack = false, dist = DIST } = {}) {
  const source = readManifest();
  mkdirSync(dist, { recursive: true });
  const firefoxDir = join(dist, 'firefox');
  writeTree(firefoxDir, firefoxManifest(source));
  const out = [{ path: firefoxDir }];
  if (pack) {
    out.push(packageZip(chromeManifest(source), dist, `parley-chrome-${source.version}.zip`));
    out.push(packageZip(firefoxManifest(source), dist, `parley-firefox-${source.version}.zip`));
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const at = process.argv.indexOf('--out');
  const dist = at > 0 && process.argv[at + 1] ? process.argv[at + 1] : DIST;
  for (const item of build({ pack: process.argv.includes('--package'), dist })) {
    const rel = relative(ROOT, item.path);
    console.log(item.sha256 ? `${rel}  ${item.bytes} bytes  sha256 ${item.sha256}` : `${rel}/`);
  }
}
