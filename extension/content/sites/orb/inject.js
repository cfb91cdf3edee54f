// Orb adapter: mounts the DM button in the profile's action row (right after the follow control),
// or the floating button when the row is not recognised (core/place.js).
import * as detect from './detect.js';
import * as selectors from './selectors.js';
import { placeButton } from '../../core/place.js';

export { detect };

/** Mount the button for `profile` ({peer, handle}); every observer and timer stops when `signal` aborts. */
export function inject(profile, { signal }) {
  placeButton(profile, { findRow: selectors.findRow, signal, site: detect.SITE });
}
