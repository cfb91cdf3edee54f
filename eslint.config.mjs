// ESLint (flat config, issue 11): the recommended rules plus eslint-plugin-no-unsanitized (no
// innerHTML/outerHTML/insertAdjacentHTML/document.write with unchecked input) over the extension and
// the build and e2e driver scripts. Run by `make lint-js` (part of `make test`) with web-ext lint of the Firefox build.
import js from '@eslint/js';
import nounsanitized from 'eslint-plugin-no-unsanitized';
import globals from 'globals';

export default [
  { ignores: ['extension/content/dist/**', 'dist/**', 'node_modules/**'] },
  js.configs.recommended,
  nounsanitized.configs.recommended,
  {
    files: ['extension/**/*.js'],
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: 'module',
      globals: { ...globals.browser, ...globals.webextensions },
    },
  },
  {
    files: ['scripts/**/*.mjs', 'scripts/**/*.js', 'eslint.config.mjs'],
    languageOptions: { ecmaVersion: 2024, sourceType: 'module', globals: { ...globals.node } },
  },
  {
    // The e2e driver runs in node; the functions it hands to page.evaluate run in the page.
    files: ['e2e/**/*.mjs'],
    languageOptions: { ecmaVersion: 2024, sourceType: 'module', globals: { ...globals.node, ...globals.browser, ...globals.webextensions } },
  },
];
