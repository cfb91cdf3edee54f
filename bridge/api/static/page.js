// Session of the bridge's own pages (inbox, wallet sign-in; bridge/api/pages.py, issue 8 item 8).
// A one-time link carries its token in the fragment (#t=…), which the browser never sends to a
// server. We trade it once for a session secret and a CSRF token, kept in sessionStorage: that is
// scoped to this origin, port included, so no other local port can read or replay it (cookies
// ignore ports). Every data request sends the secret as a header; nothing is ever a cookie.

const TOKEN_RE = /^#t=([A-Za-z0-9_-]{20,100})$/;

export class PageError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function stored(scope) {
  try {
    const value = JSON.parse(sessionStorage.getItem(`parley.${scope}`) ?? 'null');
    return value && typeof value.session === 'string' && typeof value.csrf === 'string' ? value : null;
  } catch {
    return null;
  }
}

/** The page session of `scope` ('inbox' | 'signin'): from a fresh link's fragment, else stored; or null. */
export async function pageSession(scope) {
  const match = TOKEN_RE.exec(location.hash);
  if (match) {
    history.replaceState(null, '', location.pathname + location.search); // the token is spent anyway
    const r = await fetch('/api/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: match[1] }),
      credentials: 'omit',
      cache: 'no-store',
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new PageError(r.status, body?.error?.code ?? 'error', String(body?.error?.message ?? 'this link is invalid, used or expired'));
    if (body.scope === scope) sessionStorage.setItem(`parley.${scope}`, JSON.stringify({ session: body.session, csrf: body.csrf }));
  }
  return stored(scope);
}

/** Call a JSON route with the session header (and, for POST, the CSRF header). Throws PageError. */
export async function api(session, method, path, body) {
  const headers = { 'X-Parley-Session': session.session };
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    headers['X-Parley-CSRF'] = session.csrf;
    init.body = JSON.stringify(body ?? {});
  }
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new PageError(r.status, data?.error?.code ?? 'error', String(data?.error?.message ?? `HTTP ${r.status}`));
  return data;
}

export const $ = (hook) => document.querySelector(`[data-parley="${hook}"]`);

export function show(hook, on = true) {
  const el = $(hook);
  if (el) el.hidden = !on;
}

// A fresh link opened in a tab that already shows this page changes only the fragment (no reload):
// reload so it is exchanged like any other link.
window.addEventListener('hashchange', () => {
  if (TOKEN_RE.test(location.hash)) location.reload();
});

/**
 * Follow a server-sent event stream (`text/event-stream`) with the session header: `fetch`, because
 * EventSource cannot send a header. Calls `onEvent(type, data)` per event and `onState(live)` when
 * the stream opens or drops; reconnects with backoff until the session is refused (401).
 */
export function follow(session, path, onEvent, onState = () => {}) {
  let backoff = 500;
  const run = async () => {
    for (;;) {
      try {
        const r = await fetch(path, { headers: { 'X-Parley-Session': session.session }, credentials: 'omit', cache: 'no-store' });
        if (r.status === 401) {
          onState(false);
          return;
        }
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        onState(true);
        backoff = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let type = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) type = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (!data) continue; // a comment (keep-alive)
            try {
              onEvent(type, JSON.parse(data));
            } catch {
              // a malformed event is ignored
            }
          }
        }
      } catch {
        // dropped: try again below
      }
      onState(false);
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, 15000);
    }
  };
  run();
}
