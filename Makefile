# Parley: `make run` starts a bridge with an embedded relay; `make test` installs everything and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PARLEY := $(VENV)/bin/parley
PORT ?= 8737
## test: pytest workers (pytest-xdist; one file per worker at a time, so a file's fixtures are shared). 0: one process
PYTEST_WORKERS ?= 2
## MLS (issue 14): every vector file the runner checks (python -m bridge.mls.vectors FILE...): the working
## group's, copied into tests/vectors/mls/, and the workplace's ../shared/vectors/mls/ when it exists.
MLS_VECTORS ?= $(wildcard tests/vectors/mls/*.json) $(wildcard ../shared/vectors/mls/*.json)

.PHONY: install node content firefox-build package lint-js run test test-fast planted test-py test-js test-e2e browser firefox demo bench mutate mutate-py mutate-js clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## node: the pinned JavaScript build tools (esbuild) from package-lock.json
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

node: node_modules/.installed

## content: rebuild the content-script bundle extension/content/dist/content.js (commit the result)
content: node
	node scripts/build-content.mjs

## firefox-build: the unpacked Firefox build dist/firefox/ from extension/ (scripts/build-firefox.mjs)
firefox-build: node
	node scripts/build-firefox.mjs

## package: dist/parley-chrome-<version>.zip (store upload: no `key`) and dist/parley-firefox-<version>.zip
package: node
	node scripts/build-firefox.mjs --package

## lint-js: eslint (recommended + no-unsanitized) over extension/ and scripts/, web-ext lint of the Firefox build
lint-js: node
	npx --no-install eslint extension scripts e2e/firefox_driver.mjs eslint.config.mjs
	node scripts/build-firefox.mjs
	npx --no-install web-ext lint --source-dir dist/firefox --warnings-as-errors --no-config-discovery

## run: create .venv, install, start the bridge (embedded relay); a first run initialises the home
## (one passphrase prompt, with confirmation)
run: install
	$(PARLEY) run --init --port $(PORT)

## browser: Chromium for the end-to-end suite (Debian package when possible, else Playwright's own)
browser:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: /usr/bin/chromium"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && echo "chromium: installed"; \
	else $(PY) -m playwright install chromium; fi

## firefox: Firefox ESR for the Firefox end-to-end scenario (Debian package)
firefox:
	@if command -v firefox-esr >/dev/null 2>&1; then echo "firefox: $$(command -v firefox-esr)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firefox-esr >/dev/null && echo "firefox: installed"; \
	else echo "firefox: not installed (the Firefox scenario is skipped): apt-get install firefox-esr"; fi

test: install node browser firefox lint-js
	$(PY) -m bridge.mls.vectors $(MLS_VECTORS)
	$(PY) -m pytest tests e2e -n $(PYTEST_WORKERS) --dist loadfile --durations=30
	node --test tests/js/

## test-fast: the fast subset for iteration (node tests, then pytest without the `slow` process suites and the
## browser): about 3 minutes, and it catches every planted bug in tests/mutants/ (scripts/planted.py)
test-fast: install node
	$(PY) -m bridge.mls.vectors $(MLS_VECTORS)
	node --test tests/js/
	$(PY) -m pytest tests -m "not slow" -q $(PYTEST_ARGS)

## planted: re-plant each audited bug in tests/mutants/ and check that `make test-fast` catches it
planted: install node
	$(PY) scripts/planted.py

test-js: node
	node --test tests/js/

test-py: install
	$(PY) -m pytest tests

test-e2e: install browser firefox
	$(PY) -m pytest e2e

## demo: a relay, two bridges and two headless browsers play the Alice/Bob story; screenshots in e2e/artifacts/demo/
demo: install browser
	$(PY) e2e/demo.py

bench: install browser
	$(PY) bench/crypto.py
	$(PY) bench/statements.py
	$(PY) bench/backlog.py
	$(PY) bench/extension.py

## mutate: mutation testing, not part of `make test` (docs/mutation.md; hours): mutmut over bridge/, then StrykerJS over
## the extension. MUTATE_SAMPLE=N checks N random mutants per group; MUTATE_GROUPS="bridge/engine/ ..." some groups;
## MUTATE_JOBS workers (default 1: the machine is shared)
MUTATE_JOBS ?= 1
MUTATE_SAMPLE ?=
MUTATE_GROUPS ?=
mutate: mutate-py mutate-js

mutate-py: install
	$(PY) -m pip install --quiet -e '.[mutate]'
	$(PY) scripts/mutation_run.py --jobs $(MUTATE_JOBS) $(if $(MUTATE_SAMPLE),--sample $(MUTATE_SAMPLE)) $(if $(MUTATE_GROUPS),--groups $(MUTATE_GROUPS))
	$(PY) scripts/mutation_summary.py $(if $(MUTATE_SAMPLE),--sample $(MUTATE_SAMPLE))

## mutate-js: StrykerJS mutation testing of extension/background and extension/content/core (docs/mutation-js.md; not part of `make test`)
mutate-js: node
	npx stryker run

clean:
	rm -rf $(VENV) node_modules dist .pytest_cache .hypothesis e2e/artifacts mutants reports .stryker-tmp
