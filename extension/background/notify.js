// Badge (unread count) and system notifications (DESIGN.md "Extension": badge, notifications).
// A notification names the sender only: message text is not handed to the OS notification centre.

export async function setBadge(unread) {
  const n = Number.isInteger(unread) && unread > 0 ? unread : 0;
  await chrome.action.setBadgeText({ text: n === 0 ? '' : n > 99 ? '99+' : String(n) });
  await chrome.action.setBadgeBackgroundColor({ color: '#5846dc' });
}

function short(address) {
  return typeof address === 'string' && address.length > 12 ? `${address.slice(0, 6)}…${address.slice(-4)}` : String(address);
}

export function notifyMessage(message) {
  chrome.notifications.create(`parley:${String(message.id ?? Date.now())}`, {
    type: 'basic',
    iconUrl: chrome.runtime.getURL('icons/icon-128.png'),
    title: 'New Parley message',
    message: `From ${short(message.sender)}`,
    priority: 1,
  });
}
