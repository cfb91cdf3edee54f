// Every selector for Firefly in one place (DESIGN.md "Extension": element structure and accessible
// names only). The display name sits in <address>; a sibling <div> holds Follow and the more-actions menu.

export const DISPLAY_NAME = 'address';
export const FOLLOW_NAMES = Object.freeze(['Follow', 'Following', 'Unfollow', 'Follow back', 'Edit Profile', 'Edit profile']);

function accessibleName(el) {
  return (el.getAttribute('aria-label') || el.textContent || '').trim();
}

/** Given the <address> display name, `{parent, before}` right after the Follow button, or null. */
export function placement(address) {
  const parent = address.parentElement;
  if (!parent) return null;
  for (const sibling of parent.children) {
    if (sibling === address || sibling.tagName !== 'DIV') continue;
    const follow = [...sibling.querySelectorAll('button')].find((b) => FOLLOW_NAMES.includes(accessibleName(b)));
    if (follow && follow.parentElement) return { parent: follow.parentElement, before: follow.nextSibling };
  }
  return null;
}
