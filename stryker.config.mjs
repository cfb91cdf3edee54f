// StrykerJS mutation testing of the worker (extension/background) and the content-script core
// (extension/content/core): `make mutate-js`, docs/mutation-js.md.
//
// The command runner runs scripts/stryker-tests.mjs, which runs node's test runner over the test
// files that import the mutant's part of the extension (content-core.test.mjs for content/core, the
// worker tests for background). Not run: the tests of other parts (common/, sites/, the widget
// page) and the two static checks that read source text rather than run it: content-bundle.test.mjs
// (any mutant makes the committed bundle stale, which would "kill" every content mutant for no
// behavioural reason) and extension-static.test.mjs (Stryker's instrumentation itself uses
// `new Function`, which that scan bans).
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  mutate: ['extension/background/**/*.js', 'extension/content/core/**/*.js'],
  testRunner: 'command',
  commandRunner: { command: 'node scripts/stryker-tests.mjs' },
  coverageAnalysis: 'off', // the command runner cannot tell which test covers which mutant
  concurrency: 2, // a 2-core machine, shared
  timeoutMS: 10000,
  ignorePatterns: ['/bridge', '/e2e', '/bench', '/docs', '/.venv', '/mutants', '/reports', '*.egg-info'],
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation-js/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation-js/mutation.json' },
  clearTextReporter: { allowColor: false, logTests: false, reportMutants: true, reportScoreTable: true },
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
};
