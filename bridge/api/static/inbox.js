// The local inbox page (bridge/api/web.py): a static shell filled from /api/inbox* with the page
// session header, kept current by /api/inbox/events (no reload). Message text, peers and contact
// names are hostile input: textContent only, never HTML.

import { $, PageError, api, follow, pageSession, show } from './page.js';

const PEER_RE = /^\/c\/(0x[0-9a-fA-F]{40})$/;

function when(ms) {
  const d = new Date(Number(ms));
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

function conversationItem(c, current) {
  const li = document.createElement('li');
  if (current && c.peer.toLowerCase() === current.toLowerCase()) li.className = 'current';
  const a = document.createElement('a');
  a.href = `/c/${encodeURIComponent(c.peer)}`;
  a.dataset.parley = 'conversation';
  a.dataset.peer = c.peer;
  a.title = c.peer;
  const name = document.createElement('span');
  name.className = c.name ? 'name' : 'peer';
  name.dataset.parley = 'conversation-name';
  name.textContent = c.name ? String(c.name) : c.peer;
  a.append(name);
  const unreadCount = Number(c.unread) || 0;
  if (unreadCount > 0) {
    const unread = document.createElement('span');
    unread.className = 'unread';
    unread.dataset.parley = 'unread';
    unread.setAttribute('role', 'status');
    unread.setAttribute('aria-label', `${unreadCount} unread`);
    unread.title = `${unreadCount} unread`;
    unread.textContent = String(unreadCount);
    a.append(unread);
  }
  if (c.last && typeof c.last.text === 'string') {
    const last = document.createElement('span');
    last.className = 'last';
    last.textContent = c.last.text.slice(0, 80);
    a.append(last);
  }
  li.append(a);
  return li;
}

function messageItem(m) {
  const li = document.createElement('li');
  const direction = m.direction === 'out' ? 'out' : 'in';
  li.className = direction;
  li.dataset.parley = 'message';
  li.dataset.direction = direction;
  const p = document.createElement('p');
  p.textContent = String(m.text ?? '');
  const small = document.createElement('small');
  small.textContent = when(m.sent_at) + (m.state === 'queued' ? ' · queued' : '');
  li.append(p, small);
  return li;
}

function showError(text) {
  $('error').textContent = text ?? '';
  show('error', Boolean(text));
}

async function loadThread(session, peer) {
  const data = await api(session, 'GET', `/api/inbox/c/${encodeURIComponent(peer)}`);
  $('current').textContent = data.name ? String(data.name) : data.peer;
  $('current').title = data.peer;
  $('current-address').textContent = data.name ? data.peer : '';
  const thread = $('thread');
  const root = document.scrollingElement ?? document.documentElement;
  const atBottom = root.scrollHeight - root.scrollTop - root.clientHeight < 40; // follow new messages only from the bottom
  thread.replaceChildren(...data.messages.map(messageItem));
  if (atBottom) thread.lastElementChild?.scrollIntoView({ block: 'nearest' });
  show('choose', false);
  show('thread-view');
}

async function loadConversations(session, peer) {
  const data = await api(session, 'GET', '/api/inbox');
  $('me').textContent = data.me.address;
  $('me').title = data.me.did;
  $('conversations').replaceChildren(...data.conversations.map((c) => conversationItem(c, peer)));
  show('no-conversations', data.conversations.length === 0);
  const unread = Number(data.unread) || 0;
  document.title = unread > 0 ? `(${unread}) Parley inbox` : 'Parley inbox';
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
  const match = PEER_RE.exec(location.pathname);
  const peer = match ? match[1] : null;
  try {
    await loadConversations(session, peer);
    show('inbox');
    if (peer) await loadThread(session, peer);
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
  $('reply-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = $('reply-text').value;
    if (!text.trim() || !peer) return;
    try {
      await api(session, 'POST', `/api/inbox/c/${encodeURIComponent(peer)}/send`, { text });
      $('reply-text').value = '';
      showError('');
      await loadThread(session, peer);
    } catch (error) {
      showError(`Not sent: ${error.message}`);
    }
  });
  $('read-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!peer) return;
    try {
      await api(session, 'POST', `/api/inbox/c/${encodeURIComponent(peer)}/read`, {});
      for (const el of document.querySelectorAll('nav li.current .unread')) el.remove();
    } catch (error) {
      showError(error.message);
    }
  });
  // Live: every event names a conversation; refetch the list, and the thread when it is this one.
  // Events that arrive during a refresh are folded into one more refresh after it.
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
        await loadConversations(session, peer);
        if (peer && thread) await loadThread(session, peer);
      } while (again);
    } catch (error) {
      if (!(error instanceof PageError && error.status === 401)) showError(error.message);
    } finally {
      busy = false;
    }
  };
  follow(session, '/api/inbox/events', (type, data) => {
    if (peer && (!data.peer || String(data.peer).toLowerCase() === peer.toLowerCase())) threadToo = true;
    refresh();
  }, (live) => {
    document.body.dataset.live = live ? 'on' : 'off';
  });
}

main();
