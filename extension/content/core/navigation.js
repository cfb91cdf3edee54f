// URL-change detection for single-page apps (DESIGN.md "Extension": pushState, popstate).
// Content scripts live in an isolated world, so patching the page's history.pushState would not
// see the page's calls. Instead: the Navigation API's `currententrychange` (fires for pushState,
// replaceState and traversals, whoever calls them), popstate/hashchange, and a MutationObserver
// tick as a fallback (SPAs re-render on navigation, so a changed href is seen on the next mutation).

/** Call `onChange(href)` now and on every later change of location.href, until `signal` aborts. */
export function watchUrl(onChange, { signal } = {}) {
  let last = null;
  const check = () => {
    if (signal?.aborted) return;
    const href = location.href;
    if (href === last) return;
    last = href;
    try {
      onChange(href);
    } catch (error) {
      console.debug('[parley] url handler failed', error);
    }
  };
  const nav = globalThis.navigation;
  if (nav && typeof nav.addEventListener === 'function') {
    nav.addEventListener('currententrychange', check, { signal });
  }
  globalThis.addEventListener('popstate', check, { signal });
  globalThis.addEventListener('hashchange', check, { signal });
  const observer = new MutationObserver(check);
  observer.observe(document, { childList: true, subtree: true });
  signal?.addEventListener('abort', () => observer.disconnect(), { once: true });
  check();
}
