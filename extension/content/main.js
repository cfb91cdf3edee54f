// Content entry (DESIGN.md "Extension": content scripts). Picks the site adapter by host, then runs
// it once per page view: each URL change aborts the previous view's AbortController, removes a
// stale button (or floating box) and, on a profile page, lets the adapter mount the DM button. A
// non-profile page never has either.

import * as lens from './sites/lens/inject.js';
import * as orb from './sites/orb/inject.js';
import * as firefly from './sites/firefly/inject.js';
import { watchUrl } from './core/navigation.js';
import { removeButtons } from './core/button.js';
import { removeFallback } from './core/fallback.js';
import { clearPlacement, listenForLayoutQueries } from './core/place.js';

const ADAPTERS = [lens, orb, firefly];
let started = false;

export function start() {
  if (started) return;
  started = true;
  const adapter = ADAPTERS.find((a) => a.detect.matchesHost(location.href));
  if (!adapter) return;
  listenForLayoutQueries();
  let view = null;
  watchUrl((href) => {
    view?.abort();
    view = new AbortController();
    const profile = adapter.detect.parseProfile(href);
    if (!profile) {
      clearPlacement();
      return;
    }
    removeButtons(profile.peer);
    removeFallback(profile.peer);
    try {
      adapter.inject(profile, { signal: view.signal });
    } catch (error) {
      console.debug('[parley] inject failed', adapter.detect.SITE, error);
    }
  });
}
