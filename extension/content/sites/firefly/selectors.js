// Every selector for Firefly in one place (DESIGN.md "Extension": element structure and accessible
// names only). Firefly's web client was public as DimensionDev/firefly.mask.social (January 2025):
// Profile/Info.tsx puts the display name in <address> and, beside it, `div.flex.items-center.gap-2`
// holding ProfileAction: the FollowButton and ProfileMoreAction, a headlessui Menu
// (`div.relative > button[aria-label="More"]`, components/MoreActionMenu.tsx). The row is the nearest
// common ancestor of the follow-like button and the menu button (core/placement.js). NB: on wide
// screens Firefly's FollowButton is an icon without an accessible name; there the floating button
// (core/fallback.js) appears instead.

import { byName, findActionRow } from '../../core/placement.js';

export const FOLLOW_NAMES = Object.freeze(['Follow', 'Following', 'Unfollow', 'Follow back', 'Super Follow', 'Edit Profile']);
export const MENU_NAMES = Object.freeze(['More', 'More actions']);

export const isFollow = byName(FOLLOW_NAMES);
export const isMenu = byName(MENU_NAMES);

/** The profile's action row in `root` ({row, followItem, …}) or null. */
export function findRow(root = document) {
  return findActionRow(root, { isFollow, isMenu });
}
