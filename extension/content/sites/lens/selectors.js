// Every selector for Hey in one place (DESIGN.md "Extension": aria-labels and structure only;
// never utility classes or data-testid).

/** The "More" menu button of a profile's action row; our button goes just before it. */
export const MORE_BUTTON = 'button[aria-label="More"]';
/** Labels of the first action-row button (Follow/Following, or Edit Account on your own page). */
export const ACTION_LABELS = Object.freeze(['Follow', 'Following', 'Unfollow', 'Edit Account', 'Edit Profile']);
/** Hey's old own Message button, which sat where ours goes (legacy selector, kept side by side). */
export const LEGACY_MESSAGE_BUTTON = 'button[aria-label="Message"]';

/**
 * Where to put the DM button, given a More button: `{parent, before}` or null when this More
 * button is not in a profile action row (e.g. a post's menu on the feed).
 */
export function placement(moreButton) {
  const row = moreButton.parentElement;
  if (!row) return null;
  const hasAction = [...row.children].some(
    (el) => el.tagName === 'BUTTON' && ACTION_LABELS.includes(el.getAttribute('aria-label')),
  );
  if (!hasAction) return null;
  return { parent: row, before: moreButton };
}
