# Root conftest: its presence puts the repository root on sys.path, so tests/ and e2e/ can share
# the process helpers in tests/procs.py.

import os

import pytest

_MUTMUT_HITS = os.environ.get("PARLEY_MUTMUT_HITS")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    """During mutmut's coverage pass, credit this test with the functions its child processes ran
    (tests/mutmut_site/sitecustomize.py). Does nothing in any other run."""
    if _MUTMUT_HITS and os.environ.get("MUTANT_UNDER_TEST") == "stats":
        from mutmut.stats import record_trampoline_hit

        try:
            with open(_MUTMUT_HITS) as f:
                names = set(f.read().split())
            os.unlink(_MUTMUT_HITS)
        except FileNotFoundError:
            names = set()
        for name in names:
            record_trampoline_hit(name)
    yield
