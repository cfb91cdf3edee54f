// What only the popup may do through the worker (issue 15: the backup). Kept out of messages.js,
// which the content scripts bundle: nothing here is any site page's business.

/**
 * Popup → worker: the backup (issue 15; docs/PROTOCOL.md §8.2). The worker calls the matching
 * `backup.*` method for the popup page only (handlers.js): a widget, a content script or any other
 * page gets no answer. STATUS → {ok, status}; CREATE_KEY {replace?: true} → {ok, recoveryKey} (shown
 * once, never kept); CONFIRM_KEY {recoveryKey: typed} → {ok, confirmed, enabled}; SET_REMOTE
 * {enabled} → {ok, status}. A refusal is {ok: false, error, reason}.
 */
export const POPUP_BACKUP_STATUS = 'parley/popup/backup-status';
export const POPUP_BACKUP_CREATE_KEY = 'parley/popup/backup-create-key';
export const POPUP_BACKUP_CONFIRM_KEY = 'parley/popup/backup-confirm-key';
export const POPUP_BACKUP_SET_REMOTE = 'parley/popup/backup-set-remote';

/**
 * JSON-RPC methods a widget may never name, whatever WIDGET_METHODS says (widgets.js refuses them
 * before anything else; so is any other `backup.*`). The worker calls them itself: for the popup's
 * messages, and signin.link for a widget's WALLET_SIGNIN, which only opens the bridge's own page.
 * The backup methods create and check the recovery key and tell the backup's state: a widget lives
 * in a site's page, so none of that may ever reach one.
 */
export const NEVER_WIDGET_METHODS = Object.freeze([
  'inbox.link', 'signin.link', 'backup.status', 'backup.createKey', 'backup.confirmKey', 'backup.setRemote',
]);
