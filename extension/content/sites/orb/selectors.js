// Every selector for Orb in one place. Orb's web client is closed source (no public repository was
// found): nothing about its landmarks is known, so none is required (not even <main>). The action row
// is the nearest common ancestor of a follow-like button and a menu-like one (core/placement.js);
// when Orb shows neither within a few wrappers, the floating button appears (core/fallback.js).

import { byName, findActionRow } from '../../core/placement.js';

export const FOLLOW_NAMES = Object.freeze(['Follow', 'Following', 'Follow back', 'Unfollow', 'Edit profile']);
/** Menu-like buttons next to Follow: a "More" menu, or a Share button; or any ARIA menu button. */
export const MENU_NAMES = Object.freeze(['More', 'More options', 'More actions', 'Options', 'Share']);

export const isFollow = byName(FOLLOW_NAMES);
const namedMenu = byName(MENU_NAMES);
export const isMenu = (el) => namedMenu(el) || ['menu', 'true'].includes(el.getAttribute('aria-haspopup'));

/** The profile's action row in `root` ({row, followItem, …}) or null. */
export function findRow(root = document) {
  return findActionRow(root, { isFollow, isMenu });
}
