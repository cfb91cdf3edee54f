"""Loaded only in the `parley` processes a test starts during mutmut's coverage pass (`make mutate`).

mutmut learns which tests cover a function from trampoline hits in the pytest process; functions run
only in a child process (the daemon behind tests/test_api.py, a relay, the CLI) would count as having
no tests. Here each hit in the child is appended to the file named by ``PARLEY_MUTMUT_HITS``;
``conftest.py`` hands the names to mutmut at the end of the test that caused them. Mutants themselves
reach the child without help: it inherits ``MUTANT_UNDER_TEST`` and imports ``bridge`` from mutants/.
"""

import os

_path = os.environ.get("PARLEY_MUTMUT_HITS")
if _path:
    import mutmut.stats as _stats

    _seen: set[str] = set()
    _ino = [None]

    def _record(name: str, caller: str | None = None) -> None:
        # The parent deletes the file after each test; a new file starts a new set of names.
        try:
            ino = os.stat(_path).st_ino
        except FileNotFoundError:
            ino = None
        if ino != _ino[0]:
            _seen.clear()
        if name in _seen:
            return
        _seen.add(name)
        with open(_path, "a") as f:
            f.write(name + "\n")
        _ino[0] = os.stat(_path).st_ino

    _stats.record_trampoline_hit = _record
