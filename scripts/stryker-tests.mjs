// The test command of `make mutate-js` (stryker.config.mjs). Stryker's command runner runs it once
// per mutant with __STRYKER_ACTIVE_MUTANT__ set; the mutant's file is the instrumented source that
// holds that mutant's switch, and only the test files that import that part of the extension run:
// content-core.test.mjs for extension/content/core, the worker tests for extension/background.
// Without an active mutant (Stryker's dry run) every test file runs. Tests that only read source
// text are never run here (see stryker.config.mjs).
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export const CONTENT_TESTS = ['tests/js/content-core.test.mjs', 'tests/js/placement.test.mjs'];
export const WORKER_TESTS = [
  'tests/js/bridge-reconnect.test.mjs', 'tests/js/bridge-session.test.mjs', 'tests/js/grants.test.mjs',
  'tests/js/handlers.test.mjs', 'tests/js/layout.test.mjs', 'tests/js/senders.test.mjs', 'tests/js/widgets.test.mjs', 'tests/js/worker-state.test.mjs',
];

function mutantDir(id) {
  const needle = `stryMutAct_9fa48("${id}")`;
  for (const dir of ['extension/background', 'extension/content/core']) {
    for (const name of readdirSync(dir)) {
      if (name.endsWith('.js') && readFileSync(join(dir, name), 'utf8').includes(needle)) return dir;
    }
  }
  return null;
}

const id = process.env.__STRYKER_ACTIVE_MUTANT__;
const dir = id === undefined ? null : mutantDir(id);
const files = dir === 'extension/content/core' ? CONTENT_TESTS : dir === 'extension/background' ? WORKER_TESTS : [...WORKER_TESTS, ...CONTENT_TESTS];
const run = spawnSync(process.execPath, ['--test', ...files], { stdio: 'inherit' });
process.exit(run.status ?? 1);
