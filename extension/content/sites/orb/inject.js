// Orb adapter: mounts the DM button right after the profile's Follow button inside <main>.
import * as detect from './detect.js';
import * as selectors from './selectors.js';
import { observe, reportIfMissing } from '../../core/observe.js';
import { mountButton } from '../../core/button.js';

export { detect };

/** Mount the button for `profile` ({peer, handle}); every observer stops when `signal` aborts. */
export function inject(profile, { signal }) {
  observe(selectors.CANDIDATE_BUTTON, (button) => {
    const place = selectors.placement(button);
    if (!place) return false;
    return mountButton(profile.peer, place.parent, place.before, { signal }) !== null;
  }, { signal });
  reportIfMissing(detect.SITE, selectors.CANDIDATE_BUTTON, { signal });
}
