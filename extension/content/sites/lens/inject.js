// Hey adapter: mounts the DM button between Follow and More in a profile's action row.
import * as detect from './detect.js';
import * as selectors from './selectors.js';
import { observe, reportIfMissing } from '../../core/observe.js';
import { mountButton } from '../../core/button.js';

export { detect };

/** Mount the button for `profile` ({peer, handle}); every observer stops when `signal` aborts. */
export function inject(profile, { signal }) {
  observe(selectors.MORE_BUTTON, (more) => {
    const place = selectors.placement(more);
    if (!place) return false;
    return mountButton(profile.peer, place.parent, place.before, { signal }) !== null;
  }, { signal });
  reportIfMissing(detect.SITE, selectors.MORE_BUTTON, { signal });
}
