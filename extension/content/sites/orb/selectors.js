// Every selector for Orb in one place. Orb's DOM is not public, so these are conservative
// (DESIGN.md "The three sites"): the first button inside <main> whose accessible name is a
// follow action; our button goes right after it.

export const CANDIDATE_BUTTON = 'main button';
export const FOLLOW_NAMES = Object.freeze(['Follow', 'Following', 'Follow back', 'Unfollow', 'Edit profile', 'Edit Profile']);

function accessibleName(el) {
  return (el.getAttribute('aria-label') || el.textContent || '').trim();
}

/** `{parent, before}` after `button` when it is the first follow-like button in <main>, else null. */
export function placement(button) {
  if (!FOLLOW_NAMES.includes(accessibleName(button))) return null;
  const main = button.closest('main');
  if (!main) return null;
  const first = [...main.querySelectorAll('button')].find((b) => FOLLOW_NAMES.includes(accessibleName(b)));
  if (first !== button || !button.parentElement) return null;
  return { parent: button.parentElement, before: button.nextSibling };
}
