// The popup's Backup part (issue 15 item 8). The line says the backup's state; "Set up backup" asks
// first, then shows the recovery key ONCE (the bridge keeps only keys derived from it), then has the
// user type it back: only a key typed back right turns the backup on (`backup.confirmKey`).
//
// The key lives in this page's memory only (never chrome.storage, never a URL, never the console):
// when the popup closes it is gone. A key created but never typed back is not lost silently: the
// next popup says so and offers two ways on: type it (the user did write it down) or create a new
// one, which replaces it (the old one then opens nothing made after). A confirmed key is never
// replaced from here.

import { STATUS } from '../common/messages.js';
import {
  POPUP_BACKUP_CONFIRM_KEY, POPUP_BACKUP_CREATE_KEY, POPUP_BACKUP_SET_REMOTE, POPUP_BACKUP_STATUS,
} from '../common/popup-only.js';
import { awaitingBackup, backupLine, keyGroups, relayLines } from '../common/backup-format.js';

const $ = (hook) => document.querySelector(`[data-parley="${hook}"]`);
const STEPS = ['backup-idle', 'backup-ask', 'backup-key-step', 'backup-type-step'];
const POLL_SOON_MS = 2000;
const POLL_MS = 15000;

const view = {
  status: null,
  step: 'backup-idle',
  replacing: false,
  key: null, // the key shown in this popup, until it is typed back or the popup closes
  connected: false,
  busy: false,
};
let pollTimer = null;

function message(text, kind = 'error') {
  const el = $('backup-message');
  el.textContent = text ?? '';
  el.dataset.kind = kind;
  el.hidden = !text;
}

function go(step) {
  view.step = step;
  for (const s of STEPS) $(s).hidden = s !== step;
  $('backup').dataset.step = step;
}

function when(ms) {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? 'earlier' : d.toLocaleString();
}

function renderStatus() {
  const { status } = view;
  const line = backupLine(status, Date.now());
  $('backup-line').textContent = line.text;
  $('backup-line').dataset.state = line.state;
  const errors = $('backup-relay-errors');
  errors.replaceChildren(...relayLines(status, Date.now()).filter((r) => r.state === 'error').map((r) => {
    const li = document.createElement('li');
    li.textContent = r.text;
    li.title = r.url;
    return li;
  }));
  errors.hidden = errors.childElementCount === 0;
  const known = status !== null;
  $('backup-setup').hidden = !known || status.has_key;
  $('backup-unconfirmed').hidden = !known || !status.has_key || status.confirmed;
  if (known && status.has_key && !status.confirmed) {
    $('backup-unconfirmed-text').textContent = `A recovery key was made${status.key_created_at ? ` on ${when(status.key_created_at)}` : ''}`
      + ' but never typed back. If you wrote it down, type it to turn the backup on. If not, make a new one: the old key will not open anything made after.';
  }
  $('backup-turn-on').hidden = !known || !status.confirmed || status.enabled;
  $('backup-turn-off').hidden = !known || !status.confirmed || !status.enabled;
}

function schedule() {
  clearTimeout(pollTimer);
  if (!view.connected) return;
  pollTimer = setTimeout(refresh, awaitingBackup(view.status) ? POLL_SOON_MS : POLL_MS);
}

async function send(msg) {
  try {
    return (await chrome.runtime.sendMessage(msg)) ?? { ok: false, error: 'no answer from Parley' };
  } catch (error) {
    return { ok: false, error: String(error?.message ?? error) };
  }
}

/** Ask the bridge for the state again and show it (the steps of a setup in progress stay). */
export async function refresh() {
  const reply = await send({ type: POPUP_BACKUP_STATUS });
  if (reply.ok) {
    view.status = reply.status;
    $('backup').dataset.ready = 'true';
  } else if (view.status === null) {
    $('backup-line').textContent = `Backup state unknown: ${reply.error}`;
    $('backup-line').dataset.state = 'unknown';
  }
  if (reply.ok) renderStatus();
  schedule();
}

function showKey(key) {
  view.key = key;
  $('backup-key').replaceChildren(...keyGroups(key).map((group) => {
    const span = document.createElement('span');
    span.dataset.parley = 'backup-key-group';
    span.textContent = group;
    return span;
  }));
  $('backup-copied').hidden = true;
  go('backup-key-step');
}

async function create() {
  if (view.busy) return;
  view.busy = true;
  message('');
  $('backup-create').disabled = true;
  try {
    const reply = await send({ type: POPUP_BACKUP_CREATE_KEY, ...(view.replacing ? { replace: true } : {}) });
    if (!reply.ok) {
      message(reply.error);
      go('backup-idle');
      await refresh();
      return;
    }
    showKey(reply.recoveryKey);
  } finally {
    view.busy = false;
    $('backup-create').disabled = false;
  }
}

function startTyping() {
  message('');
  $('backup-typed').value = '';
  $('backup-show-again').hidden = view.key === null;
  go('backup-type-step');
  $('backup-typed').focus();
}

async function confirm(event) {
  event.preventDefault();
  if (view.busy) return;
  const typed = $('backup-typed').value;
  if (!typed.trim()) {
    message('Type the recovery key you wrote down.');
    return;
  }
  view.busy = true;
  $('backup-confirm').disabled = true;
  message('Checking…', 'info');
  try {
    const reply = await send({ type: POPUP_BACKUP_CONFIRM_KEY, recoveryKey: typed });
    if (!reply.ok) {
      message(reply.reason === 'mismatch'
        ? 'That is not the recovery key that was shown. Check what you wrote down and type it again.'
        : reply.error);
      $('backup-typed').focus();
      return;
    }
    view.key = null; // done with it: nothing in this page holds it any more
    $('backup-typed').value = '';
    $('backup-key').replaceChildren();
    go('backup-idle');
    message(reply.enabled ? 'Your recovery key is confirmed and backup is on.' : 'Your recovery key is confirmed.', 'ok');
    await refresh();
  } finally {
    view.busy = false;
    $('backup-confirm').disabled = false;
  }
}

async function setRemote(enabled) {
  message('');
  const reply = await send({ type: POPUP_BACKUP_SET_REMOTE, enabled });
  if (!reply.ok) message(reply.error);
  else {
    view.status = reply.status;
    renderStatus();
  }
  schedule();
}

async function copyKey() {
  if (!view.key) return;
  try {
    await navigator.clipboard.writeText(view.key);
    $('backup-copied').hidden = false;
  } catch {
    message('Could not copy: write the key down from the screen.');
  }
}

/** The connection status changed: the backup is asked only while the bridge is connected. */
export function backupConnection(status) {
  const connected = status === STATUS.CONNECTED;
  $('backup').hidden = !connected;
  if (connected === view.connected) return;
  view.connected = connected;
  if (connected) refresh();
  else clearTimeout(pollTimer);
}

export function initBackup() {
  go('backup-idle');
  const ask = (replacing) => {
    view.replacing = replacing;
    $('backup-ask-replace').hidden = !replacing;
    message('');
    go('backup-ask');
  };
  $('backup-setup').addEventListener('click', () => ask(false));
  $('backup-replace').addEventListener('click', () => ask(true));
  $('backup-have-key').addEventListener('click', startTyping);
  $('backup-cancel').addEventListener('click', () => { message(''); go('backup-idle'); });
  $('backup-create').addEventListener('click', create);
  $('backup-copy').addEventListener('click', copyKey);
  $('backup-written').addEventListener('click', startTyping);
  $('backup-show-again').addEventListener('click', () => { if (view.key) showKey(view.key); });
  $('backup-type-cancel').addEventListener('click', async () => {
    go('backup-idle');
    // Not typed back: not on. The key (if this popup made it) stays in memory until the popup closes.
    message(view.key ? 'Backup is not on: the key was not typed back. Parley asks again next time.' : '');
    await refresh();
  });
  $('backup-type-step').addEventListener('submit', confirm);
  $('backup-turn-on').addEventListener('click', () => setRemote(true));
  $('backup-turn-off').addEventListener('click', () => setRemote(false));
}
