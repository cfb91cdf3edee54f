// Firefly adapter: mounts the DM button after Follow, in the <div> next to the <address> name.
import * as detect from './detect.js';
import * as selectors from './selectors.js';
import { observe, reportIfMissing } from '../../core/observe.js';
import { mountButton } from '../../core/button.js';

export { detect };

/** Mount the button for `profile` ({peer, handle}); every observer stops when `signal` aborts. */
export function inject(profile, { signal }) {
  observe(selectors.DISPLAY_NAME, (address) => {
    const place = selectors.placement(address);
    if (!place) return false;
    return mountButton(profile.peer, place.parent, place.before, { signal }) !== null;
  }, { signal });
  reportIfMissing(detect.SITE, selectors.DISPLAY_NAME, { signal });
}
