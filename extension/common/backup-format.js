// How the backup's state reads (issue 15 item 8), the same in the extension's popup and on the
// bridge's inbox page: bridge/api/static/backup-format.js is a byte-for-byte copy of this file, as
// backup-flow.js (which uses it) is of ./backup-flow.js (tests/js/backup-format.test.mjs checks
// both). Input: the status of `backup.status` (docs/PROTOCOL.md §8.2). Everything returned is
// plain text for textContent.

/** A recovery key as the bridge shows it (bridge/backup/recovery.py `display`): 16 groups of 4, one space apart. */
export const DISPLAY_KEY_RE = /^[a-z0-9]{4}( [a-z0-9]{4}){15}$/;

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** "just now", "5 min ago", "3 h ago", "2 days ago" (a time in the future reads "just now"). */
export function ago(at, now) {
  const d = Math.max(0, now - at);
  if (d < MINUTE) return 'just now';
  if (d < HOUR) return `${Math.floor(d / MINUTE)} min ago`;
  if (d < DAY) return `${Math.floor(d / HOUR)} h ago`;
  const days = Math.floor(d / DAY);
  return `${days} day${days === 1 ? '' : 's'} ago`;
}

/** 950 B, 12.3 KB, 1.2 MB, 3.4 GB (powers of 1024). */
export function size(bytes) {
  const n = Number.isFinite(bytes) && bytes > 0 ? bytes : 0;
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** A relay's URL as a short name: its host (and port), or the text itself when it is no URL. */
export function relayName(url) {
  try {
    return new URL(url).host || String(url);
  } catch {
    return String(url ?? '');
  }
}

function relays(status) {
  const list = Array.isArray(status.relays) ? status.relays : [];
  const ok = list.filter((r) => r.state === 'ok').length;
  const n = list.length;
  if (n === 0) return 'no relay';
  if (ok === n) return `${n} relay${n === 1 ? '' : 's'}`;
  return `${ok} of ${n} relays`;
}

/**
 * The one-line state: "Not set up", "Recovery key not confirmed", "Backup off", "Waiting for the
 * first backup · 2 relays", "Backed up 5 min ago · 1.2 MB · 2 relays", "Backup failing on every
 * relay", or "Backup state unknown" without a status. `state` names it for tests and styles.
 */
export function backupLine(status, now) {
  if (!status || typeof status !== 'object') return { state: 'unknown', text: 'Backup state unknown' };
  if (!status.has_key) return { state: 'none', text: 'Not set up' };
  if (!status.confirmed) return { state: 'unconfirmed', text: 'Recovery key not confirmed' };
  if (!status.enabled) return { state: 'off', text: 'Backup off' };
  const list = Array.isArray(status.relays) ? status.relays : [];
  if (list.length > 0 && list.every((r) => r.state === 'error')) return { state: 'error', text: 'Backup failing on every relay' };
  if (!status.last_backup_at) return { state: 'pending', text: `Waiting for the first backup · ${relays(status)}` };
  const state = list.some((r) => r.state === 'error') ? 'error' : list.some((r) => r.state === 'pending') ? 'pending' : 'ok';
  return { state, text: `Backed up ${ago(status.last_backup_at, now)} · ${size(status.size)} · ${relays(status)}` };
}

/** One line per relay: "relay.example:443: backed up 5 min ago", "…: waiting", "…: error: <the bridge's words>". */
export function relayLines(status, now) {
  const list = status && Array.isArray(status.relays) ? status.relays : [];
  return list.map((r) => {
    const name = relayName(r.url);
    if (r.state === 'error') return { state: 'error', url: String(r.url ?? ''), text: `${name}: error: ${r.error || 'no answer'}` };
    if (r.state === 'ok') return { state: 'ok', url: String(r.url ?? ''), text: `${name}: backed up ${r.last_at ? ago(r.last_at, now) : ''}`.trim() };
    return { state: 'pending', url: String(r.url ?? ''), text: `${name}: waiting` };
  });
}

/** True while the state may change soon by itself (a first backup, a relay catching up): poll more often. */
export function awaitingBackup(status) {
  if (!status || !status.enabled || !status.confirmed) return false;
  return !status.last_backup_at || (Array.isArray(status.relays) && status.relays.some((r) => r.state === 'pending'));
}

/** The key in its groups of four (the display form is 16 groups separated by single spaces). */
export function keyGroups(key) {
  return typeof key === 'string' ? key.split(' ').filter(Boolean) : [];
}
