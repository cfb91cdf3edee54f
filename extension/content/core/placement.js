// Where the DM button goes (issue 11; DESIGN.md "The three sites"). The sites' markup changes every
// few weeks and wraps its buttons in components (Hey: `div.contents > button[aria-label="Follow"]`
// and `div.relative > button[aria-label="More"]`), so no exact parent/child shape is assumed: the
// action row is the NEAREST COMMON ANCESTOR of a follow-like button and a menu-like button, found
// within MAX_WRAPPERS levels of wrapping on each side. No landmark (<main>, <header>) is required.
//
// The button goes into that row right after the row's child that holds the follow-like button (so
// between Follow and More on Hey, whatever wraps them).

/** At most this many wrapper elements between a button and the row's child that holds it. */
export const MAX_WRAPPERS = 4;

/** Buttons (and ARIA buttons) the site may use for follow and menu controls. */
export const CANDIDATES = 'button, [role="button"]';

/** Our own elements never count as the site's buttons. */
const OURS = '[data-parley]';

/** The accessible name we match on: aria-label, else the trimmed text content. */
export function accessibleName(el) {
  return (el.getAttribute('aria-label') || el.textContent || '').replace(/\s+/g, ' ').trim();
}

/** A matcher for buttons whose accessible name is one of `names` (case-insensitive). */
export function byName(names) {
  const wanted = new Set(names.map((n) => n.toLowerCase()));
  return (el) => wanted.has(accessibleName(el).toLowerCase());
}

/** The child of `row` that contains `el` (el itself when it is a direct child). */
function childOf(row, el) {
  let node = el;
  while (node && node.parentElement !== row) node = node.parentElement;
  return node;
}

/**
 * The profile's action row in `root`, or null.
 *
 * `isFollow(el)` and `isMenu(el)` classify candidate buttons. The row is the nearest common ancestor
 * of a follow-like and a menu-like button, provided neither button is more than `maxWrappers`
 * wrappers below the row's children (distance ≤ maxWrappers + 1 from each). Follow-like buttons are
 * tried in document order (the profile header comes before side panels); for each, the first of its
 * ancestors that is also a close enough ancestor of some menu button is the row (walking up from the
 * follow button, the first shared ancestor is the nearest common one). Linear in the number of
 * candidate buttons, as it runs on every DOM mutation while no row has been found. Returns
 * `{row, follow, menu, followItem, menuItem}` where *Item are the row's children holding each button.
 */
export function findActionRow(root, { isFollow, isMenu, maxWrappers = MAX_WRAPPERS } = {}) {
  if (!root || typeof isFollow !== 'function' || typeof isMenu !== 'function') return null;
  const levels = maxWrappers + 1;
  const follows = [];
  const menuAbove = new Map(); // ancestor → the closest menu button below it (within `levels`)
  for (const el of root.querySelectorAll(CANDIDATES)) {
    if (el.closest(OURS)) continue;
    if (isFollow(el)) {
      follows.push(el);
    } else if (isMenu(el)) {
      let node = el.parentElement;
      for (let d = 1; node && d <= levels; d += 1, node = node.parentElement) {
        const seen = menuAbove.get(node);
        if (!seen || seen.d > d) menuAbove.set(node, { d, menu: el });
      }
    }
  }
  for (const follow of follows) {
    let node = follow.parentElement;
    for (let d = 1; node && d <= levels; d += 1, node = node.parentElement) {
      const hit = menuAbove.get(node);
      if (!hit) continue;
      if (hit.menu.contains(follow)) break; // a menu wrapping the follow button is no partner
      return { row: node, follow, menu: hit.menu, followItem: childOf(node, follow), menuItem: childOf(node, hit.menu) };
    }
  }
  return null;
}

/** `{parent, before}` for mountButton: in the row, right after the child holding the follow button. */
export function placeAfterFollow(found) {
  if (!found) return null;
  return { parent: found.row, before: found.followItem.nextSibling };
}
