# Root conftest: its presence puts the repository root on sys.path, so tests/ and e2e/ can share
# the process helpers in tests/procs.py.

import os

import pytest

# No test reaches the internet: the built-in public name services (bridge/nameservices.py) are off in
# this process too (tests/procs.py does the same for every process it starts); fakes are configured
# through the settings or their environment variables.
os.environ["PARLEY_NAME_SERVICE_DEFAULTS"] = "off"

_MUTMUT_HITS = os.environ.get("PARLEY_MUTMUT_HITS")
_generation = 0


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    """During mutmut's coverage pass, credit this test with the functions its child processes ran
    (tests/mutmut_site/sitecustomize.py), then start a new generation. Does nothing in any other run."""
    if _MUTMUT_HITS and os.environ.get("MUTANT_UNDER_TEST") == "stats":
        import glob

        from mutmut.stats import record_trampoline_hit

        names: set[str] = set()
        for path in glob.glob(glob.escape(_MUTMUT_HITS) + ".[0-9]*"):
            with open(path, "r+") as f:
                names.update(f.read().split())
                f.truncate(0)  # the child appends (O_APPEND): its next write starts the file again
        for name in names:
            record_trampoline_hit(name)
        global _generation
        _generation += 1
        with open(_MUTMUT_HITS + ".generation", "w") as f:
            f.write(f"{os.getpid()}.{_generation}")  # every child forgets what it already reported
    yield
