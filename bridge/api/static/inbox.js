// The local inbox page (bridge/api/web.py): a static shell filled from /api/inbox* with the page
// session header, kept current by /api/inbox/events (no reload). Message text, file names, peers,
// emoji and contact names are hostile input: textContent only, never HTML.
//
// Issue 12: folders (Inbox, Requests, All), the request banner (Accept / Decline / Block), replies,
// reactions, edits, deletes, read receipts, typing dots, and attachments (uploaded with progress,
// thumbnails and Save fetched with the session header and shown from object URLs).

import { $, PageError, api, follow, pageSession, show } from './page.js';
import { startBackup } from './backup.js';

const PEER_RE = /^\/c\/(0x[0-9a-fA-F]{40})$/;
const FOLDERS = ['inbox', 'requests', 'all'];
const FOLDER_TITLES = { inbox: 'Conversations', requests: 'Message requests', all: 'All conversations' };
const EMOJIS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const MAX_FILE = 26_214_400; // 25 MiB (PROTOCOL §6.7)
const MAX_FILES = 10;
const TYPING_SHOW_MS = 6000; // a peer's dots go away after this without news
const TYPING_EVERY_MS = 3000; // we tell the peer at most this often while typing
const TYPING_IDLE_MS = 5000; // and that we stopped after this long without a keystroke

const state = {
  session: null,
  peer: null,
  folder: 'inbox',
  me: '',
  consent: null,
  messages: new Map(),
  replyTo: null, // a message id
  editing: null, // a message id
  uploads: [], // [{id, name, size}] uploaded, not yet sent
  openMenu: null, // the id of the message whose menu is open (kept across re-renders)
  sending: false,
  thumbs: new Map(), // attachment id → object URL (or a pending promise)
};

function when(ms) {
  const d = new Date(Number(ms));
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

function el(tag, hook, text) {
  const e = document.createElement(tag);
  if (hook) e.dataset.parley = hook;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function bytes(n) {
  const v = Number(n) || 0;
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KB`;
  return `${(v / 1024 / 1024).toFixed(1)} MB`;
}

const same = (a, b) => typeof a === 'string' && typeof b === 'string' && a.toLowerCase() === b.toLowerCase();
const mine = (m) => m.direction === 'out';
const who = (address) => (same(address, state.me) ? 'you' : String(address));
const peerPath = (suffix = '') => `/api/inbox/c/${encodeURIComponent(state.peer)}${suffix}`;

function folderHref(path) {
  return state.folder === 'inbox' ? path : `${path}?folder=${state.folder}`;
}

function conversationItem(c) {
  const li = document.createElement('li');
  if (same(c.peer, state.peer)) li.className = 'current';
  const a = el('a', 'conversation');
  a.href = folderHref(`/c/${encodeURIComponent(c.peer)}`);
  a.dataset.peer = c.peer;
  a.dataset.consent = String(c.consent ?? 'allowed');
  a.title = c.peer;
  const name = el('span', 'conversation-name', c.name ? String(c.name) : c.peer);
  name.className = c.name ? 'name' : 'peer';
  a.append(name);
  const unreadCount = Number(c.unread) || 0;
  if (unreadCount > 0) {
    const unread = el('span', 'unread', unreadCount);
    unread.className = 'unread';
    unread.setAttribute('role', 'status');
    unread.setAttribute('aria-label', `${unreadCount} unread`);
    unread.title = `${unreadCount} unread`;
    a.append(unread);
  }
  if (c.consent && c.consent !== 'allowed') {
    const label = el('span', 'consent-label', c.consent === 'requested' ? 'request' : c.consent);
    label.className = 'consent-label';
    a.append(label);
  }
  if (c.last && typeof c.last.text === 'string') {
    const last = el('span', 'last', c.last.deleted ? 'This message was deleted' : c.last.text.slice(0, 80));
    last.className = 'last';
    a.append(last);
  }
  li.append(a);
  return li;
}

// --- a message -----------------------------------------------------------------------------------

function replyQuote(m) {
  const q = el('blockquote', 'reply-quote');
  q.className = 'reply-quote';
  const p = m.reply_preview;
  if (p && typeof p === 'object') {
    const author = el('span', null, same(p.sender, state.me) ? 'You' : String(p.sender ?? '').slice(0, 10) + '…');
    author.className = 'author';
    const text = el('span', null, p.deleted ? 'This message was deleted' : String(p.text ?? '').slice(0, 200));
    q.append(author, ' ', text);
    q.dataset.replyTo = String(p.id ?? m.reply_to);
  } else {
    q.textContent = 'Reply to a message that is not here';
  }
  return q;
}

function reactionsOf(m) {
  const box = el('div', 'reactions');
  box.className = 'reactions';
  const reactions = m.reactions && typeof m.reactions === 'object' ? m.reactions : {};
  for (const [emoji, people] of Object.entries(reactions)) {
    const list = Array.isArray(people) ? people.map(String) : [];
    if (list.length === 0) continue;
    const b = el('button', 'reaction', `${emoji} ${list.length}`);
    b.type = 'button';
    b.dataset.emoji = emoji;
    b.title = list.map(who).join(', ');
    const byMe = list.some((a) => same(a, state.me));
    b.setAttribute('aria-pressed', String(byMe));
    b.addEventListener('click', () => react(m.id, emoji, byMe));
    box.append(b);
  }
  return box;
}

function attachmentCard(a) {
  const card = el('div', 'attachment');
  card.className = 'attachment';
  card.dataset.attachmentId = String(a.id);
  card.dataset.state = String(a.state ?? '');
  if (a.thumbnail) {
    const img = el('img', 'thumbnail');
    img.alt = String(a.name ?? '');
    loadThumbnail(String(a.id), img);
    const frame = document.createElement('div');
    frame.className = 'thumb';
    frame.append(img);
    card.append(frame);
  }
  const info = el('span', 'file-name', a.name ?? 'file');
  info.className = 'file-name';
  const size = el('span', 'file-size', bytes(a.size));
  size.className = 'file-size';
  card.append(info, size);
  const progress = el('progress', 'progress');
  progress.max = 1;
  const p = a.progress && typeof a.progress === 'object' ? a.progress : null;
  if (p && Number(p.total) > 0) progress.value = Number(p.done) / Number(p.total);
  progress.hidden = !(p || a.state === 'pending' || a.state === 'downloading');
  card.append(progress);
  if (a.state === 'failed' || a.state === 'refused') {
    const error = el('span', 'attachment-error', a.state === 'refused' ? 'not downloaded (unknown relay)' : 'download failed');
    error.className = 'error';
    card.append(error);
  } else {
    const save = el('button', 'save', 'Save');
    save.type = 'button';
    save.addEventListener('click', () => saveAttachment(String(a.id), String(a.name ?? 'attachment'), save));
    card.append(save);
  }
  return card;
}

function menuPanel(m) {
  const panel = el('div', 'menu-panel');
  panel.className = 'menu-panel';
  const button = (hook, text, action) => {
    const b = el('button', hook, text);
    b.type = 'button';
    b.addEventListener('click', action);
    panel.append(b);
    return b;
  };
  button('menu-reply', 'Reply', () => startReply(m));
  const choices = el('span', 'react-choices');
  choices.hidden = true;
  button('menu-react', 'React', () => {
    choices.hidden = !choices.hidden;
  });
  for (const emoji of EMOJIS) {
    const b = el('button', 'react-choice', emoji);
    b.type = 'button';
    b.dataset.emoji = emoji;
    const people = (m.reactions && Array.isArray(m.reactions[emoji]) ? m.reactions[emoji] : []).map(String);
    b.addEventListener('click', () => react(m.id, emoji, people.some((a) => same(a, state.me))));
    choices.append(b);
  }
  panel.append(choices);
  if (mine(m) && !m.deleted) {
    if (m.kind !== 'unknown') button('menu-edit', 'Edit', () => startEdit(m));
    button('menu-delete', 'Delete for everyone', () => remove(m.id));
  }
  return panel;
}

function messageItem(m) {
  const li = document.createElement('li');
  const direction = mine(m) ? 'out' : 'in';
  li.className = direction;
  li.dataset.parley = 'message';
  li.dataset.id = String(m.id ?? '');
  li.dataset.state = String(m.state ?? '');
  li.dataset.direction = direction;
  if (m.reply_to && !m.deleted) li.append(replyQuote(m));
  // The first line: the text (or tombstone), the time and marks, the menu button.
  const head = document.createElement('div');
  head.className = 'head';
  const attachments = Array.isArray(m.attachments) ? m.attachments : [];
  if (m.deleted) {
    const p = el('p', 'tombstone', 'This message was deleted');
    p.className = 'tombstone';
    head.append(p);
  } else if (String(m.text ?? '') !== '' || attachments.length === 0) {
    head.append(el('p', 'text', m.text ?? ''));
  }
  const meta = el('small', null, when(m.sent_at));
  if (m.edited && !m.deleted) meta.append(' · ', el('span', 'edited-mark', 'edited'));
  if (m.unsupported) meta.append(' · ', el('span', 'unsupported', 'sent with a newer Parley: shown as plain text'));
  if (direction === 'out') {
    if (m.state === 'read') meta.append(' · ', el('span', 'receipt', 'Read'));
    else if (m.state === 'queued') meta.append(' · queued');
    else if (m.state === 'failed') meta.append(' · ', el('span', 'send-failed', 'not sent'));
  }
  if (m.flag) {
    const flag = el('span', 'flag', ' · ⚠');
    flag.title = String(m.flag);
    meta.append(flag);
  }
  head.append(meta);
  li.append(head);
  if (!m.deleted) {
    const menu = el('button', 'menu', '⋯');
    menu.type = 'button';
    menu.className = 'menu';
    menu.setAttribute('aria-label', 'Message actions');
    menu.setAttribute('aria-expanded', String(state.openMenu === m.id));
    menu.addEventListener('click', () => {
      state.openMenu = state.openMenu === m.id ? null : m.id;
      rerender();
    });
    head.append(menu);
    if (attachments.length) {
      const files = el('div', 'attachments');
      files.className = 'attachments';
      files.append(...attachments.map(attachmentCard));
      li.append(files);
    }
    const reactions = reactionsOf(m);
    if (reactions.childElementCount) li.append(reactions);
    if (state.openMenu === m.id) li.append(menuPanel(m));
  }
  return li;
}

// --- attachments: thumbnails and Save with the session header ------------------------------------

async function fetchBlob(path) {
  const r = await fetch(path, { headers: { 'X-Parley-Session': state.session.session }, credentials: 'omit', cache: 'no-store' });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new PageError(r.status, body?.error?.code ?? 'error', String(body?.error?.message ?? `HTTP ${r.status}`));
  }
  return r.blob();
}

function loadThumbnail(id, img) {
  const known = state.thumbs.get(id);
  if (typeof known === 'string') {
    img.src = known;
    return;
  }
  const pending = known ?? fetchBlob(`/api/inbox/attachments/${encodeURIComponent(id)}/thumbnail`).then(
    (blob) => {
      // only the bridge's own thumbnail types are shown, whatever else came back
      if (blob.type !== 'image/jpeg' && blob.type !== 'image/png') throw new Error('not a thumbnail');
      const url = URL.createObjectURL(blob);
      state.thumbs.set(id, url);
      return url;
    },
    (error) => {
      state.thumbs.delete(id);
      throw error;
    },
  );
  state.thumbs.set(id, pending);
  pending.then((url) => {
    img.src = url;
  }).catch(() => {
    img.hidden = true;
  });
}

async function saveAttachment(id, name, button) {
  button.disabled = true;
  try {
    const blob = await fetchBlob(`/api/inbox/attachments/${encodeURIComponent(id)}`);
    const url = URL.createObjectURL(new Blob([blob], { type: 'application/octet-stream' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    showError(`Not saved: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

// --- actions -----------------------------------------------------------------------------------

function showError(text) {
  $('error').textContent = text ?? '';
  show('error', Boolean(text));
}

async function act(path, body) {
  try {
    const result = await api(state.session, 'POST', peerPath(path), body);
    showError('');
    return result;
  } catch (error) {
    showError(error.message);
    return null;
  }
}

async function react(id, emoji, remove) {
  state.openMenu = null;
  if (await act('/react', { id, emoji, remove })) await loadThread();
  else rerender();
}

async function remove(id) {
  state.openMenu = null;
  if (state.editing === id || state.replyTo === id) cancelComposer();
  if (await act('/delete', { id })) await loadThread();
  else rerender();
}

function composerBanner(label, text) {
  $('reply-preview-label').textContent = label;
  $('reply-preview-text').textContent = String(text ?? '').slice(0, 200);
  show('reply-preview');
}

function startReply(m) {
  state.openMenu = null;
  state.editing = null;
  state.replyTo = m.id;
  composerBanner('Replying to', m.deleted ? 'This message was deleted' : m.text);
  rerender();
  $('reply-text').focus();
}

function startEdit(m) {
  state.openMenu = null;
  state.replyTo = null;
  state.editing = m.id;
  composerBanner('Editing', m.text);
  $('reply-text').value = String(m.text ?? '');
  rerender();
  $('reply-text').focus();
}

function cancelComposer() {
  const wasEditing = state.editing !== null;
  state.replyTo = null;
  state.editing = null;
  show('reply-preview', false);
  if (wasEditing) $('reply-text').value = '';
}

function renderUploads() {
  $('uploads').replaceChildren(
    ...state.uploads.map((u) => {
      const li = el('li', 'pending-upload');
      li.append(el('span', null, `${u.name} (${bytes(u.size)})`));
      const x = el('button', 'remove-upload', '✕');
      x.type = 'button';
      x.setAttribute('aria-label', `Remove ${u.name}`);
      x.addEventListener('click', () => {
        state.uploads = state.uploads.filter((v) => v !== u);
        renderUploads();
      });
      li.append(x);
      return li;
    }),
  );
}

function uploadProgress(text, fraction) {
  const box = $('upload-progress');
  box.hidden = text === null;
  if (text === null) return;
  $('upload-progress-text').textContent = text;
  const bar = box.querySelector('progress');
  if (fraction === null) bar.removeAttribute('value');
  else bar.value = fraction;
}

/** Upload one file as the raw body (XHR: its upload progress events drive the bar). */
function uploadFile(file) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const q = new URLSearchParams({ name: file.name, mime: file.type || 'application/octet-stream' });
    xhr.open('POST', `/api/inbox/uploads?${q}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('X-Parley-Session', state.session.session);
    xhr.setRequestHeader('X-Parley-CSRF', state.session.csrf);
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) uploadProgress(`Uploading ${file.name}: ${Math.round((100 * e.loaded) / e.total)}%`, e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: the status says it
      }
      if (xhr.status === 201 && typeof body.upload_id === 'string') resolve(body.upload_id);
      else reject(new Error(String(body?.error?.message ?? `HTTP ${xhr.status}`)));
    });
    xhr.addEventListener('error', () => reject(new Error('the bridge is unreachable')));
    xhr.send(file);
  });
}

async function attachFiles(files) {
  if (!state.peer || state.consent === 'blocked') return;
  for (const file of Array.from(files ?? [])) {
    if (state.uploads.length >= MAX_FILES) {
      showError(`At most ${MAX_FILES} files in a message.`);
      break;
    }
    if (file.size > MAX_FILE) {
      showError(`${file.name} is larger than 25 MB.`);
      continue;
    }
    try {
      const id = await uploadFile(file);
      state.uploads.push({ id, name: file.name, size: file.size });
      renderUploads();
      showError('');
    } catch (error) {
      showError(`${file.name} not attached: ${error.message}`);
    }
  }
  uploadProgress(null);
}

// --- typing ---------------------------------------------------------------------------------------

let typingSentAt = 0;
let typingOn = false;
let typingIdle = null;
function typingSet(on) {
  if (!state.peer || state.consent !== 'allowed') return; // never to a request (that would accept it)
  typingOn = on;
  typingSentAt = on ? Date.now() : 0;
  api(state.session, 'POST', peerPath('/typing'), { typing: on }).catch(() => {});
}
function onKeystroke() {
  clearTimeout(typingIdle);
  const empty = $('reply-text').value.trim() === '';
  if (empty || state.editing) {
    if (typingOn) typingSet(false);
    return;
  }
  if (!typingOn || Date.now() - typingSentAt > TYPING_EVERY_MS) typingSet(true);
  typingIdle = setTimeout(() => typingOn && typingSet(false), TYPING_IDLE_MS);
}

let peerTypingTimer = null;
function peerTyping(on) {
  clearTimeout(peerTypingTimer);
  show('typing', on);
  if (on) peerTypingTimer = setTimeout(() => show('typing', false), TYPING_SHOW_MS);
}

// --- loading ------------------------------------------------------------------------------------

let lastThread = [];
function rerender() {
  const thread = $('thread');
  thread.replaceChildren(...lastThread.map(messageItem));
}

function banner(consent, held) {
  const request = consent === 'requested' || consent === 'declined';
  show('requests-banner', request);
  show('blocked-banner', consent === 'blocked');
  show('decline', consent === 'requested');
  $('banner-text').textContent = consent === 'declined'
    ? 'You declined this request: it is hidden from your inbox. Accept it to move it there.'
    : 'This is a message request: you have not written to this address and it is not in your contacts. It cannot see whether you read it.';
  const n = Number(held) || 0;
  $('held-count').textContent = n > 0 ? `${n} more message${n === 1 ? '' : 's'} held back until you accept` : '';
  show('held-count', n > 0);
  show('reply-form', consent !== 'blocked');
  show('conversation-block', consent === 'allowed');
}

async function loadThread() {
  const peer = state.peer;
  const data = await api(state.session, 'GET', `/api/inbox/c/${encodeURIComponent(peer)}`);
  if (peer !== state.peer) return;
  $('current').textContent = data.name ? String(data.name) : data.peer;
  $('current').title = data.peer;
  $('current-address').textContent = data.name ? data.peer : '';
  state.consent = typeof data.consent === 'string' ? data.consent : 'allowed';
  banner(state.consent, data.held);
  const root = document.scrollingElement ?? document.documentElement;
  const atBottom = root.scrollHeight - root.scrollTop - root.clientHeight < 40; // follow new messages only from the bottom
  lastThread = Array.isArray(data.messages) ? data.messages : [];
  state.messages = new Map(lastThread.map((m) => [m.id, m]));
  if (state.openMenu && !state.messages.has(state.openMenu)) state.openMenu = null;
  rerender();
  if (atBottom) $('thread').lastElementChild?.scrollIntoView({ block: 'nearest' });
  show('choose', false);
  show('thread-view');
}

async function loadConversations() {
  const data = await api(state.session, 'GET', `/api/inbox?folder=${state.folder}`);
  state.me = String(data.me.address);
  $('me').textContent = data.me.address;
  $('me').title = data.me.did;
  const conversations = Array.isArray(data.conversations) ? data.conversations : [];
  $('conversations').replaceChildren(...conversations.map(conversationItem));
  show('no-conversations', conversations.length === 0);
  $('no-conversations').textContent = state.folder === 'requests'
    ? 'No message requests.'
    : 'No conversations yet. Open a profile on hey.xyz, orb.club or firefly.social and press Message.';
  const requests = Number(data.requests) || 0;
  $('requests-count').textContent = requests > 0 ? String(requests) : '';
  $('folder-requests').setAttribute('aria-label', `Requests: ${requests}`);
  const unread = Number(data.unread) || 0;
  document.title = unread > 0 ? `(${unread}) Parley inbox` : 'Parley inbox';
}

function setUpFolders() {
  for (const f of FOLDERS) {
    const link = $(`folder-${f}`);
    if (f === state.folder) link.setAttribute('aria-current', 'page');
    if (state.peer) link.href = f === 'inbox' ? '/' : `/?folder=${f}`;
  }
  $('folder-title').textContent = FOLDER_TITLES[state.folder];
}

async function submit(event) {
  event.preventDefault();
  if (!state.peer || state.sending) return;
  const text = $('reply-text').value;
  const uploads = state.uploads.map((u) => u.id);
  if (!text.trim() && (uploads.length === 0 || state.editing)) return;
  state.sending = true;
  $('reply-send').disabled = true;
  try {
    if (state.editing) {
      await api(state.session, 'POST', peerPath('/edit'), { id: state.editing, text });
    } else {
      const body = { text: text.trim() ? text : '' };
      if (state.replyTo) body.reply_to = state.replyTo;
      if (uploads.length) {
        body.uploads = uploads;
        uploadProgress('Sending…', null);
      }
      await api(state.session, 'POST', peerPath('/send'), body);
      state.uploads = [];
      renderUploads();
    }
    $('reply-text').value = '';
    cancelComposer();
    clearTimeout(typingIdle);
    typingOn = false;
    showError('');
    await loadThread();
  } catch (error) {
    showError(`${state.editing ? 'Not edited' : 'Not sent'}: ${error.message}`);
  } finally {
    state.sending = false;
    $('reply-send').disabled = false;
    uploadProgress(null);
  }
}

function setUpComposer() {
  $('reply-form').addEventListener('submit', submit);
  $('reply-text').addEventListener('input', onKeystroke);
  $('reply-cancel').addEventListener('click', cancelComposer);
  $('attach').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', async () => {
    const files = Array.from($('file-input').files ?? []);
    $('file-input').value = '';
    await attachFiles(files);
  });
  // Drop files anywhere on the page while a conversation is open.
  const dragging = (e) => state.peer && state.consent !== 'blocked' && Array.from(e.dataTransfer?.types ?? []).includes('Files');
  document.addEventListener('dragover', (e) => {
    if (!dragging(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    show('drop-hint');
  });
  document.addEventListener('dragleave', (e) => {
    if (e.relatedTarget === null) show('drop-hint', false);
  });
  document.addEventListener('drop', (e) => {
    show('drop-hint', false);
    if (!dragging(e)) return;
    e.preventDefault();
    attachFiles(e.dataTransfer.files);
  });
  const consentButtons = { accept: 'accept', decline: 'decline', block: 'block', unblock: 'unblock', 'conversation-block': 'block' };
  for (const [hook, action] of Object.entries(consentButtons)) {
    $(hook).addEventListener('click', async () => {
      if (await act('/consent', { action })) {
        await loadConversations();
        await loadThread();
      }
    });
  }
}

async function main() {
  let session;
  try {
    session = await pageSession('inbox');
  } catch (error) {
    $('login-error').textContent = error.message;
  }
  if (!session) {
    show('login-needed');
    return;
  }
  state.session = session;
  const match = PEER_RE.exec(location.pathname);
  state.peer = match ? match[1] : null;
  const folder = new URLSearchParams(location.search).get('folder');
  state.folder = FOLDERS.includes(folder) ? folder : 'inbox';
  setUpFolders();
  try {
    await loadConversations();
    show('inbox');
    if (state.peer) await loadThread();
  } catch (error) {
    if (error instanceof PageError && error.status === 401) {
      sessionStorage.removeItem('parley.inbox');
      show('inbox', false);
      show('login-needed');
      return;
    }
    show('inbox');
    showError(error.message);
  }
  setUpComposer();
  startBackup(session); // the Backup panel (issue 15)
  $('read-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!state.peer) return;
    try {
      await api(session, 'POST', peerPath('/read'), {});
      for (const e of document.querySelectorAll('nav li.current .unread')) e.remove();
    } catch (error) {
      showError(error.message);
    }
  });
  // Live: every event names a conversation; refetch the list, and the thread when it is this one.
  // Events that arrive during a refresh are folded into one more refresh after it. Typing and
  // progress events change only what they name, without a refetch.
  let busy = false;
  let again = false;
  let threadToo = false;
  const refresh = async () => {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        const thread = threadToo;
        threadToo = false;
        await loadConversations();
        if (state.peer && thread) await loadThread();
      } while (again);
    } catch (error) {
      if (!(error instanceof PageError && error.status === 401)) showError(error.message);
    } finally {
      busy = false;
    }
  };
  follow(session, '/api/inbox/events', (type, data) => {
    const here = state.peer && (!data.peer || same(String(data.peer), state.peer));
    if (type === 'typing') {
      if (here && data.peer) peerTyping(data.typing === true);
      return;
    }
    if (type === 'attachment.progress') {
      const total = Number(data.total) || 0;
      const fraction = total > 0 ? Math.min(1, (Number(data.done) || 0) / total) : null;
      if (data.phase === 'upload' && state.sending) {
        uploadProgress(`Sending: ${fraction === null ? '' : Math.round(100 * fraction) + '%'}`, fraction);
      } else if (here) {
        for (const card of document.querySelectorAll('[data-parley="attachment"]')) {
          if (card.dataset.attachmentId !== String(data.id)) continue;
          const bar = card.querySelector('[data-parley="progress"]');
          bar.hidden = false;
          if (fraction !== null) bar.value = fraction;
        }
      }
      return;
    }
    if (type === 'message.new' && here) peerTyping(false);
    if (here) threadToo = true;
    refresh();
  }, (live) => {
    document.body.dataset.live = live ? 'on' : 'off';
  });
}

main();
