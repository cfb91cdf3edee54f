// The inbox page's Backup panel (issue 15 item 8): the flow the extension's popup uses
// (backup-flow.js, the same file) over this page's /api/backup routes, which need the page session
// and, to change anything, its CSRF token and our Origin (page.js `api`). The recovery key comes in
// one POST answer (never a URL), is shown from memory and is never put in sessionStorage or
// localStorage (only the page session is).

import { PageError, api } from './page.js';
import { mountBackup } from './backup-flow.js';

async function answer(work) {
  try {
    return { ok: true, ...(await work()) };
  } catch (error) {
    return { ok: false, error: String(error?.message ?? error), reason: error instanceof PageError ? error.code : 'error' };
  }
}

/** Mount the panel for `session` and start asking the bridge. */
export function startBackup(session) {
  const transport = {
    status: () => answer(async () => ({ status: await api(session, 'GET', '/api/backup') })),
    createKey: (replace) => answer(async () => {
      const reply = await api(session, 'POST', '/api/backup/key', replace ? { replace: true } : {});
      return { recoveryKey: reply.recovery_key };
    }),
    confirmKey: (typed) => answer(() => api(session, 'POST', '/api/backup/confirm', { recovery_key: typed })),
    setRemote: (enabled) => answer(async () => ({ status: await api(session, 'POST', '/api/backup/remote', { enabled }) })),
  };
  const part = mountBackup(transport);
  part.setActive(true);
  return part;
}
