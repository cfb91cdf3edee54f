// Every selector for Hey in one place (DESIGN.md "Extension": accessible names and structure only;
// never utility classes or data-testid). Hey's source (heyxyz/hey, March 2025) renders the profile's
// action row as `div.flex.items-center.space-x-2` holding `div.contents > button[aria-label="Follow"]`
// (Shared/Account/FollowUnfollowButton.tsx; "Following" once followed, "Super Follow" with rules,
// a bare "Edit Account" button on your own page) and `div.relative > button[aria-label="More"]`
// (Account/Menu, a headlessui Menu). So nothing here assumes parent/child shape: the row is the
// nearest common ancestor of the follow-like and the More button (core/placement.js).

import { byName, findActionRow } from '../../core/placement.js';

/** Accessible names of the follow-like control (Follow/Following, or Edit Account on your own page). */
export const FOLLOW_NAMES = Object.freeze(['Follow', 'Following', 'Unfollow', 'Super Follow', 'Edit Account', 'Edit Profile']);
/** Accessible names of the profile's menu button. Hey once had its own "Message" button there too. */
export const MENU_NAMES = Object.freeze(['More']);

export const isFollow = byName(FOLLOW_NAMES);
export const isMenu = byName(MENU_NAMES);

/** The profile's action row in `root` ({row, followItem, …}) or null. */
export function findRow(root = document) {
  return findActionRow(root, { isFollow, isMenu });
}
