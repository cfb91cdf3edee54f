// Service worker entry (DESIGN.md "Extension": service worker). Thin: imports small modules and
// registers every listener at top level, so a worker woken by an event finds them in place.

import { STATUS } from '../common/messages.js';
import { normalizeAddress, normalizeMessageAddresses } from '../common/peer.js';
import { connect, onNotification } from './bridge.js';
import { forgetTab } from './grants.js';
import { onMessage } from './handlers.js';
import { forgetLayoutTab } from './layout.js';
import { notifyMessage, setBadge } from './notify.js';
import { getStatus, onStatus, setSession } from './state.js';
import { broadcastStatus, forwardEvent, onConnect, widgetOpenFor } from './widgets.js';

const ALARM = 'parley-reconnect';

chrome.runtime.onMessage.addListener(onMessage);
chrome.runtime.onConnect.addListener(onConnect);
chrome.tabs.onRemoved.addListener((tabId) => { forgetTab(tabId); forgetLayoutTab(tabId); });
chrome.runtime.onStartup.addListener(() => { connect(); });
chrome.runtime.onInstalled.addListener(() => { connect(); });
// Timers die with the worker; an alarm wakes it to reconnect (Chrome 120+ allows 30 s periods,
// 116-119 clamp to 1 min).
chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === ALARM && getStatus() !== STATUS.CONNECTED) connect();
});
chrome.alarms.get(ALARM).then((existing) => {
  if (!existing) chrome.alarms.create(ALARM, { periodInMinutes: 0.5 });
});

onStatus((status) => { broadcastStatus(status); });

onNotification((method, params) => {
  // Addresses arrive checksummed (mixed case): normalise them to lower case on receipt.
  if (method === 'message.new' && params && typeof params.message === 'object' && params.message) {
    const message = normalizeMessageAddresses(params.message);
    const peer = normalizeAddress(message.peer);
    if (!peer) return;
    forwardEvent(method, { ...params, message }, peer);
    // Issue 12: only a conversation the user accepted raises a desktop notification; a message request
    // (consent "requested"), a declined one or a bridge that does not say never does.
    if (message.direction === 'in' && params.consent === 'allowed' && !widgetOpenFor(peer)) notifyMessage(message);
  } else if (method === 'consent.changed' && params && normalizeAddress(params.peer)) {
    // consent (issue 12): accept/decline/block here or on another installation: the open widget follows
    const peer = normalizeAddress(params.peer);
    forwardEvent(method, { ...params, peer }, peer);
  } else if (method === 'message.updated' && params && typeof params.message === 'object' && params.message) {
    // delivered, failed, or flagged (its sender turned out revoked): the open widget updates the message
    const message = normalizeMessageAddresses(params.message);
    const peer = normalizeAddress(message?.peer);
    if (peer) forwardEvent(method, { ...params, message }, peer);
  } else if (method === 'identity.changed' && params && normalizeAddress(params.address)) {
    // The bridge now acts for another wallet (browser-wallet sign-in): show it everywhere.
    setSession({
      identity: { address: String(params.address), did: String(params.did ?? ''), installation_id: String(params.installation_id ?? '') },
    });
  } else if (method === 'conversation.updated' && params && normalizeAddress(params.peer)) {
    const peer = normalizeAddress(params.peer);
    forwardEvent(method, { ...params, peer }, peer);
    if (Number.isInteger(params.total_unread)) {
      setSession({ unread: params.total_unread });
    }
  }
});

chrome.storage.session.onChanged.addListener((changes) => {
  if (changes.unread) setBadge(changes.unread.newValue);
});

connect();
