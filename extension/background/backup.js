// The backup, worker side (issue 15 item 8; docs/PROTOCOL.md §8.2 `backup.*`).
//
// Only the popup reaches this module (handlers.js: a POPUP_BACKUP_* message from the popup page).
// A widget's port refuses every `backup.*` method (widgets.js) and a content script's message is
// not answered, so a site's page never learns the backup's state and never sees a recovery key.
//
// The recovery key passes through here once, from `backup.createKey` to the popup that asked: it is
// checked for its shape, never logged, never put in chrome.storage (the worker may die at any time,
// and storage outlives the popup). The typed key goes the other way to `backup.confirmKey`.

import { STATUS } from '../common/messages.js';
import { call, connect } from './bridge.js';
import { getStatus, waitConnected } from './state.js';
import { DISPLAY_KEY_RE } from '../common/backup-format.js';
/** The most a typed key may be (groups, dashes, spaces, new lines): the bridge parses it. */
export const TYPED_KEY_MAX = 200;
const TEXT_MAX = 200;
const RELAYS_MAX = 16;

const text = (value, max = TEXT_MAX) => (typeof value === 'string' ? value.slice(0, max) : null);
const ms = (value) => (Number.isSafeInteger(value) && value >= 0 ? value : null);
const count = (value) => (Number.isSafeInteger(value) && value >= 0 ? value : 0);

/**
 * The bridge's status object (§8.2 `backup.status`), rebuilt from the fields the popup shows: known
 * keys only, strings cut, numbers checked. A relay's error is the bridge's words about the relay's
 * answer, shown as text.
 */
export function cleanStatus(raw) {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return null;
  const relays = Array.isArray(raw.relays) ? raw.relays.slice(0, RELAYS_MAX) : [];
  const standby = raw.standby && typeof raw.standby === 'object' ? raw.standby : {};
  return {
    enabled: raw.enabled === true,
    has_key: raw.has_key === true,
    confirmed: raw.confirmed === true,
    key_created_at: ms(raw.key_created_at),
    last_backup_at: ms(raw.last_backup_at),
    size: count(raw.size),
    segments: count(raw.segments),
    relays: relays.filter((r) => r && typeof r === 'object').map((r) => ({
      url: text(r.url) ?? '',
      state: ['ok', 'error', 'pending'].includes(r.state) ? r.state : 'pending',
      last_at: ms(r.last_at),
      error: text(r.error),
    })),
    standby: { installation_id: text(standby.installation_id, 100), created_at: ms(standby.created_at) },
  };
}

class BackupRefused extends Error {
  constructor(message, reason = 'error') {
    super(message);
    this.reason = reason;
  }
}

async function connected() {
  if (getStatus() !== STATUS.CONNECTED) await connect();
  if (getStatus() !== STATUS.CONNECTED && !(await waitConnected(3000))) throw new BackupRefused(`Parley bridge: ${getStatus()}`, 'bridge');
}

async function ask(method, params) {
  await connected();
  try {
    return await call(method, params);
  } catch (error) {
    const reason = typeof error?.data?.reason === 'string' ? error.data.reason.slice(0, 40) : (error?.code === -32601 ? 'unsupported' : 'error');
    const message = error?.code === -32601 ? 'this bridge has no backups (update Parley)' : String(error?.message ?? error);
    throw new BackupRefused(message.slice(0, TEXT_MAX), reason);
  }
}

async function answer(work) {
  try {
    return { ok: true, ...(await work()) };
  } catch (error) {
    return { ok: false, error: String(error?.message ?? error), reason: error?.reason ?? 'error' };
  }
}

/** `backup.status` → {ok, status}. */
export function backupStatus() {
  return answer(async () => {
    const status = cleanStatus(await ask('backup.status'));
    if (!status) throw new BackupRefused('the bridge sent no backup status');
    return { status };
  });
}

/**
 * `backup.createKey` → {ok, recoveryKey}: the key in groups, for the popup to show once. `replace`
 * (true only): a key exists but was never confirmed, and the user chose a new one.
 */
export function createKey(replace) {
  return answer(async () => {
    const reply = await ask('backup.createKey', replace === true ? { replace: true } : {});
    const key = reply?.recovery_key;
    if (typeof key !== 'string' || !DISPLAY_KEY_RE.test(key)) throw new BackupRefused('the bridge sent no recovery key');
    return { recoveryKey: key };
  });
}

/** `backup.confirmKey` with what the user typed → {ok, confirmed, enabled}; a mismatch is {ok: false, reason: 'mismatch'}. */
export function confirmKey(typed) {
  return answer(async () => {
    if (typeof typed !== 'string' || !typed.trim() || typed.length > TYPED_KEY_MAX) {
      throw new BackupRefused('type the recovery key (64 letters and digits)', 'malformed');
    }
    const reply = await ask('backup.confirmKey', { recovery_key: typed });
    if (reply?.confirmed !== true) throw new BackupRefused('the bridge did not confirm the key', 'mismatch');
    return { confirmed: true, enabled: reply.enabled === true };
  });
}

/** `backup.setRemote {enabled}` → {ok, status}. */
export function setRemote(enabled) {
  return answer(async () => {
    if (typeof enabled !== 'boolean') throw new BackupRefused('enabled must be true or false', 'malformed');
    const status = cleanStatus(await ask('backup.setRemote', { enabled }));
    if (!status) throw new BackupRefused('the bridge sent no backup status');
    return { status };
  });
}
