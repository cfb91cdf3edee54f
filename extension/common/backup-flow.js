// The Backup part of the extension's popup and of the bridge's inbox page (issue 15 item 8): one
// flow, two transports. bridge/api/static/backup-flow.js is a byte-for-byte copy of this file
// (tests/js/backup-format.test.mjs checks it); the popup talks to the worker (popup/backup.js), the
// page to its /api/backup routes (bridge/api/static/backup.js).
//
// The line says the backup's state. "Set up backup" asks first, then shows the recovery key ONCE
// (the bridge keeps only keys derived from it), then has the user type it back: only a key typed
// back right turns the backup on (`backup.confirmKey`).
//
// The key lives in this page's memory only (never storage, never a URL, never the console): when
// the page closes it is gone. A key made but never typed back is not lost silently: the next time
// the page says so and offers both ways on: type it (the user did write it down) or make a new one,
// which replaces it (the old one then opens nothing made after). A confirmed key is never replaced
// from here: the bridge refuses it.
//
// transport: {status(), createKey(replace), confirmKey(typed), setRemote(enabled)}, each resolving
// {ok: true, ...} ({status} | {recoveryKey} | {confirmed, enabled, error?} | {status}) or
// {ok: false, error, reason}.

import { DISPLAY_KEY_RE, awaitingBackup, backupLine, keyGroups, relayLines } from './backup-format.js';

const STEPS = ['backup-idle', 'backup-ask', 'backup-key-step', 'backup-type-step'];
const POLL_SOON_MS = 2000;
const POLL_MS = 15000;

const $ = (hook) => document.querySelector(`[data-parley="${hook}"]`);

function when(ms) {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? 'earlier' : d.toLocaleString();
}

/** Wire the Backup part of this document to `transport`. Returns {refresh, setActive(on)}. */
export function mountBackup(transport) {
  const view = { status: null, replacing: false, key: null, active: false, busy: false };
  let pollTimer = null;

  const message = (text, kind = 'error') => {
    const el = $('backup-message');
    el.textContent = text ?? '';
    el.dataset.kind = kind;
    el.hidden = !text;
  };

  const go = (step) => {
    for (const s of STEPS) $(s).hidden = s !== step;
    $('backup').dataset.step = step;
  };

  const line = (li, entry) => {
    li.textContent = entry.text;
    li.title = entry.url;
    li.dataset.state = entry.state;
    return li;
  };

  function renderStatus() {
    const { status } = view;
    const now = Date.now();
    const summary = backupLine(status, now);
    $('backup-line').textContent = summary.text;
    $('backup-line').dataset.state = summary.state;
    const relays = relayLines(status, now);
    const errors = $('backup-relay-errors'); // the popup: only the relays in trouble
    if (errors) {
      errors.replaceChildren(...relays.filter((r) => r.state === 'error').map((r) => line(document.createElement('li'), r)));
      errors.hidden = errors.childElementCount === 0;
    }
    const all = $('backup-relays'); // the page: every relay
    if (all) {
      all.replaceChildren(...relays.map((r) => {
        const li = line(document.createElement('li'), r);
        li.dataset.parley = 'backup-relay';
        return li;
      }));
      all.hidden = relays.length === 0;
    }
    const standby = $('backup-standby');
    if (standby) {
      const id = status?.standby?.installation_id;
      standby.textContent = id ? `Standby installation: ${id}` : 'No standby installation';
    }
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
    if (view.active) pollTimer = setTimeout(refresh, awaitingBackup(view.status) ? POLL_SOON_MS : POLL_MS);
  }

  async function call(fn, ...args) {
    try {
      return (await fn(...args)) ?? { ok: false, error: 'no answer' };
    } catch (error) {
      return { ok: false, error: String(error?.message ?? error), reason: 'error' };
    }
  }

  /** Ask for the state again and show it (a setup in progress keeps its step). */
  async function refresh() {
    const reply = await call(transport.status);
    if (reply.ok) {
      view.status = reply.status;
      renderStatus();
      $('backup').dataset.ready = 'true';
    } else if (view.status === null) {
      $('backup-line').textContent = `Backup state unknown: ${reply.error}`;
      $('backup-line').dataset.state = 'unknown';
    }
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
      const reply = await call(transport.createKey, view.replacing);
      if (!reply.ok || typeof reply.recoveryKey !== 'string' || !DISPLAY_KEY_RE.test(reply.recoveryKey)) {
        message(reply.ok ? 'the bridge sent no recovery key' : reply.error);
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
      const reply = await call(transport.confirmKey, typed);
      if (!reply.ok) {
        message(reply.reason === 'mismatch'
          ? 'That is not the recovery key that was shown. Check what you wrote down and type it again.'
          : reply.error);
        $('backup-typed').focus();
        return;
      }
      view.key = null; // done with it: nothing here holds it any more
      $('backup-typed').value = '';
      $('backup-key').replaceChildren();
      go('backup-idle');
      if (reply.enabled) message('Your recovery key is confirmed and backup is on.', 'ok');
      else message(`Your recovery key is confirmed, but backup is not on${reply.error ? `: ${reply.error}` : ''}.`);
      await refresh();
    } finally {
      view.busy = false;
      $('backup-confirm').disabled = false;
    }
  }

  async function setRemote(enabled) {
    message('');
    const reply = await call(transport.setRemote, enabled);
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

  const ask = (replacing) => {
    view.replacing = replacing;
    $('backup-ask-replace').hidden = !replacing;
    message('');
    go('backup-ask');
  };

  go('backup-idle');
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
    // Not typed back: not on. A key this page made stays in its memory until the page closes.
    message(view.key ? 'Backup is not on: the key was not typed back. Parley asks again next time.' : '');
    await refresh();
  });
  $('backup-type-step').addEventListener('submit', confirm);
  $('backup-turn-on').addEventListener('click', () => setRemote(true));
  $('backup-turn-off').addEventListener('click', () => setRemote(false));

  return {
    refresh,
    /** Ask the bridge (now, then on a timer) while `on`; stop while the bridge cannot be asked. */
    setActive(on) {
      if (on === view.active) return;
      view.active = on;
      if (on) refresh();
      else clearTimeout(pollTimer);
    },
  };
}
