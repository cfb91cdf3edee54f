// Tiny single-page-app kit shared by the three site replicas (e2e only). Client-side navigation with
// history.pushState, popstate, and late rendering (profile headers appear after a fetch + delay, so
// the extension's content script has to observe the DOM rather than find it at load).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) el.append(child);
  return el;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let fixtures = null;
export async function loadFixtures() {
  if (!fixtures) fixtures = await (await fetch('/fixtures.json', { cache: 'no-store' })).json();
  return fixtures;
}

export function userByName(fx, name) {
  return Object.entries(fx.users).map(([handle, u]) => ({ handle, ...u })).find((u) => u.handle === name) ?? null;
}
export function userByAddress(fx, address) {
  return Object.entries(fx.users).map(([handle, u]) => ({ handle, ...u }))
    .find((u) => u.address.toLowerCase() === String(address).toLowerCase()) ?? null;
}
export function userByFid(fx, fid) {
  return Object.entries(fx.users).map(([handle, u]) => ({ handle, ...u })).find((u) => String(u.fid) === String(fid)) ?? null;
}

/** Profile-render delay: ?delay=ms overrides the default, so tests can make rendering later still. */
export function renderDelay(fallback = 400) {
  const value = Number(new URLSearchParams(location.search).get('delay'));
  return Number.isFinite(value) && value >= 0 && new URLSearchParams(location.search).has('delay') ? value : fallback;
}

let generation = 0;
/** Start routing: `render(path, isCurrent)` draws the page; isCurrent() turns false once the user navigated on. */
export function startRouter(render) {
  const go = () => {
    const mine = ++generation;
    render(location.pathname, () => mine === generation);
  };
  document.addEventListener('click', (event) => {
    const link = event.target.closest('a[data-link]');
    if (!link || link.origin !== location.origin || event.button !== 0 || event.metaKey || event.ctrlKey) return;
    event.preventDefault();
    history.pushState({}, '', link.href);
    go();
  });
  addEventListener('popstate', go);
  go();
}

/**
 * The replica's layout shape (issue 11): "direct" (Follow and the menu are direct children of one
 * row: the original replicas), "wrapped" (the sites' real component wrappers) or "unknown" (a layout
 * the extension cannot recognise: its floating button must appear). Chosen by ?shape= on the first
 * load of a tab and kept for that tab (sessionStorage), so client-side navigation keeps it.
 */
export const SHAPES = Object.freeze(['direct', 'wrapped', 'unknown']);
export const SHAPE = (() => {
  const asked = new URLSearchParams(location.search).get('shape');
  if (SHAPES.includes(asked)) sessionStorage.setItem('replica-shape', asked);
  const kept = sessionStorage.getItem('replica-shape');
  return SHAPES.includes(kept) ? kept : 'direct';
})();
document.documentElement.dataset.replicaShape = SHAPE;
