// Sender checks (DESIGN.md "Extension": every message checked for its sender). Tiers:
// extension pages (by URL), content scripts (top frame of a tab on one of the three sites).

export const SITE_HOSTS = Object.freeze(['hey.xyz', 'orb.club', 'orb.ac', 'firefly.social']);

function fromUs(sender) {
  return Boolean(sender) && sender.id === chrome.runtime.id;
}

/** The message comes from the extension page at `path` (e.g. "popup/popup.html"). */
export function isExtensionPage(sender, path) {
  if (!fromUs(sender) || typeof sender.url !== 'string') return false;
  const page = chrome.runtime.getURL(path);
  return sender.url === page || sender.url.startsWith(`${page}?`) || sender.url.startsWith(`${page}#`);
}

/** The message comes from our content script in the top frame of a tab on one of the three sites. */
export function isSiteContentScript(sender) {
  if (!fromUs(sender) || !sender.tab || sender.frameId !== 0) return false;
  let url;
  try {
    url = new URL(sender.origin ?? sender.url);
  } catch {
    return false;
  }
  return url.protocol === 'https:' && SITE_HOSTS.includes(url.hostname);
}
