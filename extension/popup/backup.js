// The popup's Backup part (issue 15 item 8): the shared flow (common/backup-flow.js) over the
// worker, which calls `backup.*` on the bridge for this page only (background/backup.js). Asked
// only while the bridge is connected.

import { STATUS } from '../common/messages.js';
import {
  POPUP_BACKUP_CONFIRM_KEY, POPUP_BACKUP_CREATE_KEY, POPUP_BACKUP_SET_REMOTE, POPUP_BACKUP_STATUS,
} from '../common/popup-only.js';
import { mountBackup } from '../common/backup-flow.js';

const worker = (msg) => chrome.runtime.sendMessage(msg);

const transport = {
  status: () => worker({ type: POPUP_BACKUP_STATUS }),
  createKey: (replace) => worker({ type: POPUP_BACKUP_CREATE_KEY, ...(replace ? { replace: true } : {}) }),
  confirmKey: (typed) => worker({ type: POPUP_BACKUP_CONFIRM_KEY, recoveryKey: typed }),
  setRemote: (enabled) => worker({ type: POPUP_BACKUP_SET_REMOTE, enabled }),
};

let part = null;

export function initBackup() {
  part = mountBackup(transport);
}

/** The connection status changed: the Backup part shows and asks only while connected. */
export function backupConnection(status) {
  const connected = status === STATUS.CONNECTED;
  document.querySelector('[data-parley="backup"]').hidden = !connected;
  part?.setActive(connected);
}
