// The content script's entry, bundled by scripts/build-content.mjs into content/dist/content.js (one
// classic IIFE, which is what MV3 content scripts can be). Only the bundle ships to the sites; none of
// content/** or common/** is web-accessible, so a page cannot fingerprint the extension by fetching
// them (issue 8 item 7).
import { start } from './main.js';

try {
  start();
} catch (error) {
  console.debug('[parley] content script failed to start', error);
}
