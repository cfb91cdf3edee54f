// The chat widget container: a fixed-position box appended to the page holding a bar with the close
// button and, below it, an <iframe data-parley="widget"> on the extension's widget page. The page (and
// this content script) never see message text: the iframe is a cross-origin extension page.
//
// Clickjacking (issue 8 item 6): widget.html is web-accessible, so the page could frame it too. The
// widget stays inert until it gets a one-time nonce that the worker minted for this tab and this
// peer; it is posted to our frame's window for the extension's origin only, so the page never sees it
// (chrome.runtime.getFrameId, which would bind the frame too, is not offered to content scripts). The close button sits above the iframe, never over it: the
// widget refuses to act while anything covers it (IntersectionObserver v2).

import { CONTENT_OPEN_WIDGET, WIDGET_NONCE } from '../../common/messages.js';

const CONTAINER = '[data-parley="widget-container"]';
const BAR_PX = 28;

function style(el, props) {
  for (const [name, value] of Object.entries(props)) el.style.setProperty(name, value, 'important');
}

export function widgetUrl(peer) {
  return `${chrome.runtime.getURL('widget/widget.html')}?peer=${encodeURIComponent(peer)}`;
}

/** The extension's own origin, from the URL the browser gives its pages. */
export function extensionOrigin() {
  return chrome.runtime.getURL('').replace(/\/+$/, '');
}

/** Ask the worker for a nonce and hand it to the widget in our frame (extension origin only). */
async function introduce(frame, peer) {
  let reply;
  try {
    reply = await chrome.runtime.sendMessage({ type: CONTENT_OPEN_WIDGET, peer });
  } catch {
    return;
  }
  if (typeof reply?.nonce !== 'string' || !frame.isConnected) return;
  // The widget's own origin: chrome-extension://<id> in Chrome, moz-extension://<uuid per install> in
  // Firefox (where runtime.id is the add-on id, not the origin's host).
  frame.contentWindow?.postMessage({ type: WIDGET_NONCE, nonce: reply.nonce }, extensionOrigin());
}

/** Open (or re-target) the widget for `peer`. Returns the iframe. */
export function openWidget(peer) {
  let container = document.querySelector(CONTAINER);
  if (container) {
    const frame = container.querySelector('iframe[data-parley="widget"]');
    if (frame && frame.dataset.parleyPeer === peer) return frame;
    container.remove();
  }
  container = document.createElement('div');
  container.dataset.parley = 'widget-container';
  style(container, {
    position: 'fixed', right: '16px', bottom: '16px', width: '360px', height: '520px',
    'z-index': '2147483647', background: '#fff', 'border-radius': '12px',
    'box-shadow': '0 8px 32px rgba(0,0,0,.25)', overflow: 'hidden', display: 'flex', 'flex-direction': 'column',
  });
  const bar = document.createElement('div');
  style(bar, {
    display: 'flex', 'justify-content': 'flex-end', 'align-items': 'center', height: `${BAR_PX}px`,
    'flex-shrink': '0', background: '#f7f7fb', 'border-bottom': '1px solid #e6e6ee',
  });
  const close = document.createElement('button');
  close.type = 'button';
  close.dataset.parley = 'widget-close';
  close.setAttribute('aria-label', 'Close Parley chat');
  close.textContent = '×';
  style(close, {
    border: '0', background: 'transparent', 'font-size': '20px', 'line-height': `${BAR_PX}px`,
    cursor: 'pointer', color: '#555', padding: '0 10px',
  });
  close.addEventListener('click', () => container.remove(), { once: true });
  bar.append(close);
  const frame = document.createElement('iframe');
  frame.dataset.parley = 'widget';
  frame.dataset.parleyPeer = peer;
  frame.title = 'Parley chat';
  frame.referrerPolicy = 'no-referrer';
  frame.allow = 'clipboard-write'; // the invite's Copy button (navigator.clipboard in the extension page)
  frame.addEventListener('load', () => { introduce(frame, peer); });
  frame.src = widgetUrl(peer);
  style(frame, { border: '0', width: '100%', flex: '1', 'min-height': '0' });
  container.append(bar, frame);
  document.body.append(container);
  return frame;
}

export function closeWidget() {
  document.querySelector(CONTAINER)?.remove();
}
