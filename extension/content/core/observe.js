// observe(selector, callback, {signal}) over MutationObserver (refined-github's habit): the callback
// runs for every element matching `selector`, now and whenever one appears later, until the signal
// aborts. An element for which the callback returns true is marked handled (WeakSet) and never
// passed again; one for which it returns false (e.g. its row is not rendered yet) is retried on the
// next mutation, which is how late-rendered DOM is caught.

export function observe(selector, callback, { signal, root = document } = {}) {
  if (signal?.aborted) return;
  const seen = new WeakSet();
  const run = () => {
    if (signal?.aborted) return;
    for (const element of root.querySelectorAll(selector)) {
      if (seen.has(element)) continue;
      try {
        if (callback(element) === true) seen.add(element);
      } catch (error) {
        console.debug('[parley] observe callback failed', selector, error);
      }
    }
  };
  const observer = new MutationObserver(run);
  observer.observe(root, { childList: true, subtree: true, attributes: true, attributeFilter: ['aria-label'] });
  signal?.addEventListener('abort', () => observer.disconnect(), { once: true });
  run();
}

/** Log (debug) when nothing matched within `ms`: selectors that stop matching are reported. */
export function reportIfMissing(site, selector, { signal, ms = 8000 } = {}) {
  const timer = setTimeout(() => {
    if (!signal?.aborted && !document.querySelector('[data-parley="dm-button"]')) {
      console.debug(`[parley] ${site}: no anchor for the DM button (${selector}); has the site changed?`);
    }
  }, ms);
  signal?.addEventListener('abort', () => clearTimeout(timer), { once: true });
}
