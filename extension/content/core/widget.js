// The chat widget container: a fixed-position box appended to the page holding an
// <iframe data-parley="widget"> on the extension's widget page. The page (and this content script)
// never see message text: the iframe is a cross-origin extension page.

const CONTAINER = '[data-parley="widget-container"]';

function style(el, props) {
  for (const [name, value] of Object.entries(props)) el.style.setProperty(name, value, 'important');
}

export function widgetUrl(peer) {
  return `${chrome.runtime.getURL('widget/widget.html')}?peer=${encodeURIComponent(peer)}`;
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
  const close = document.createElement('button');
  close.type = 'button';
  close.dataset.parley = 'widget-close';
  close.setAttribute('aria-label', 'Close Parley chat');
  close.textContent = '×';
  style(close, {
    position: 'absolute', top: '6px', right: '8px', border: '0', background: 'transparent',
    'font-size': '20px', cursor: 'pointer', 'z-index': '1', color: '#555',
  });
  close.addEventListener('click', () => container.remove(), { once: true });
  const frame = document.createElement('iframe');
  frame.dataset.parley = 'widget';
  frame.dataset.parleyPeer = peer;
  frame.title = 'Parley chat';
  frame.referrerPolicy = 'no-referrer';
  frame.allow = 'clipboard-write'; // the invite's Copy button (navigator.clipboard in the extension page)
  frame.src = widgetUrl(peer);
  style(frame, { border: '0', width: '100%', height: '100%' });
  container.append(close, frame);
  document.body.append(container);
  return frame;
}

export function closeWidget() {
  document.querySelector(CONTAINER)?.remove();
}
