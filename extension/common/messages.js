// Message names shared by the service worker, content scripts, the widget and the popup
// (DESIGN.md "Extension": one messages.js of shared names). Handlers are tiered by sender trust:
// CONTENT_* come from content scripts on the three sites, POPUP_* from the popup page, and the
// widget talks over a chrome.runtime port named WIDGET_PORT.

/** Content script → worker: resolve a peer and ask whether it can receive Parley messages. */
export const CONTENT_LOOKUP_PEER = 'parley/content/lookup-peer';

/**
 * Content script → worker: {type, peer}. The content script has just opened the widget iframe for
 * `peer`; the worker answers {nonce}, a one-time secret bound to (tab, peer) that the content script
 * hands to that frame only (postMessage to the extension's origin). Issue 8 item 6.
 */
export const CONTENT_OPEN_WIDGET = 'parley/content/open-widget';
/** Content script → widget window: {type: WIDGET_NONCE, nonce}. */
export const WIDGET_NONCE = 'parley/widget-nonce';

/** Popup → worker: read the current state snapshot. */
export const POPUP_GET_STATE = 'parley/popup/get-state';
/** Popup → worker: store a bridge URL (`http://127.0.0.1:PORT`). */
export const POPUP_SET_BRIDGE_URL = 'parley/popup/set-bridge-url';
/** Popup → worker: pair with the code `parley pair` printed. */
export const POPUP_PAIR = 'parley/popup/pair';
/** Popup or widget → worker: retry the bridge connection now. */
export const RECONNECT = 'parley/reconnect';
/** Popup → worker: forget the pairing token. */
export const POPUP_UNPAIR = 'parley/popup/unpair';
/** Popup → worker: {folder: 'inbox'|'requests'}: open the bridge's inbox page (a one-time link, issue 12). */
export const POPUP_OPEN_INBOX = 'parley/popup/open-inbox';

/** Name of the chrome.runtime port a widget page opens to the worker. */
export const WIDGET_PORT = 'parley-widget';
/** Widget → worker over the port: {type: WIDGET_RPC, id, method, params}. */
export const WIDGET_RPC = 'rpc';
/** Worker → widget: {type: WIDGET_RPC_RESULT, id, result} or {..., error}. */
export const WIDGET_RPC_RESULT = 'rpc-result';
/** Worker → widget: {type: WIDGET_EVENT, method, params} (bridge notifications for this peer). */
export const WIDGET_EVENT = 'event';
/** Worker → widget: {type: WIDGET_STATUS, status}. */
export const WIDGET_STATUS = 'status';
/**
 * Widget → worker: {type: WIDGET_ATTACH, nonce} (first open) or {type: WIDGET_ATTACH, nonce: null}
 * (the port was re-opened after the worker restarted). Until the worker answers
 * {type: WIDGET_GATE, ok: true} it serves this port nothing.
 */
export const WIDGET_ATTACH = 'attach';
/**
 * Widget → worker: {type: WIDGET_POPOUT} from an admitted widget frame in a browser without
 * IntersectionObserver v2 (Firefox): open this conversation in a window of the worker's own, where
 * no page can cover it (grants.js mintWindowNonce).
 */
export const WIDGET_POPOUT = 'popout';
/** Worker → widget: {type: WIDGET_GATE, ok, reason?}. */
export const WIDGET_GATE = 'gate';
/** Widget → worker: {type: WIDGET_HELLO, peer} names the conversation this port shows. */
export const WIDGET_HELLO = 'hello';

/** Connection states, as shown by the popup (only CONNECTED contains the word "connected"). */
export const STATUS = Object.freeze({
  NOT_PAIRED: 'not paired',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  UNREACHABLE: 'bridge unreachable',
  /** Something answers on the bridge's port but cannot prove it holds the paired bridge's key. */
  NOT_VERIFIED: 'bridge not verified',
});

/** JSON-RPC methods a widget may call (everything else is refused by the worker). */
export const WIDGET_METHODS = Object.freeze([
  'resolve', 'canMessage', 'messages.list', 'messages.send', 'messages.markRead',
  // issue 12 (docs/PROTOCOL.md §8.2): each about the widget's own conversation only
  'messages.react', 'messages.edit', 'messages.delete', 'typing.set', 'consent.get', 'consent.set',
  'attachments.begin', 'attachments.chunk', 'attachments.cancel', 'attachments.thumbnail', 'attachments.read',
]);

/** Limits the worker checks a widget's params against (issue 12; the bridge checks them again). */
export const LIMITS = Object.freeze({
  TEXT_MAX: 10000,
  FILE_MAX: 25 * 1024 * 1024, // 26_214_400 bytes, one file
  CHUNK_MAX: 196608, // attachments.begin's chunk_size, and attachments.read's largest length
  CHUNK_B64_MAX: 256 * 1024, // one base64 chunk string
  EMOJI_MAX: 32,
  FILES_MAX: 10,
});

/** The six reactions the widget offers. */
export const REACTIONS = Object.freeze(['👍', '❤️', '😂', '😮', '😢', '🙏']);

/** Consent actions (consent.set). */
export const CONSENT_ACTIONS = Object.freeze(['accept', 'decline', 'block', 'unblock']);

// --- Layout fallback (issue 11: the DM button on the real sites) ---------------------------------
/**
 * Content script → worker: {type, mode} with mode "placed" (the action row was found), "fallback"
 * (a profile page whose layout was not recognised: the floating button) or "none" (not a profile).
 * The worker keeps it per tab (for the popup) and answers {dismissed}: whether the user hid the
 * floating button on this site. The site is taken from the sender, never from the message.
 */
export const CONTENT_LAYOUT = 'parley/content/layout';
/** Content script → worker: the user hid the floating button on this site (a trusted click). */
export const CONTENT_FALLBACK_DISMISS = 'parley/content/fallback-dismiss';
/**
 * Worker → the content script of a tab (top frame): {type} → {mode}, its current layout mode. The
 * worker checks its per-tab record with it, since the tab may have left the site since it reported.
 */
export const CONTENT_LAYOUT_QUERY = 'parley/content/layout-query';
/** Popup → worker: {type, tabId} → {site, mode, dismissed} for that tab. */
export const POPUP_LAYOUT_STATE = 'parley/popup/layout-state';
/** Popup → worker: {type, site}: show the floating button on `site` again. */
export const POPUP_LAYOUT_RESTORE = 'parley/popup/layout-restore';
/** Layout modes a content script may report. */
export const LAYOUT_MODES = Object.freeze(['placed', 'fallback', 'none']);
