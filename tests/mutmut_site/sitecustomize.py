"""Loaded only in the `parley` processes a test starts during mutmut's coverage pass (`make mutate`).

mutmut learns which tests cover a function from trampoline hits in the pytest process; functions run
only in a child process (the daemon behind tests/test_api.py, a relay, the CLI) would count as having
no tests. Here each child appends the names of the mutated functions it runs to its own file
``$PARLEY_MUTMUT_HITS.<pid>``; ``conftest.py`` hands the names to mutmut at the end of each test and
then writes a new number into ``$PARLEY_MUTMUT_HITS.generation``, which tells every child that a new test began (a
long-lived daemon serves several tests, and must report a name again for each). Mutants themselves
reach the child without help: it inherits ``MUTANT_UNDER_TEST`` and imports ``bridge`` from mutants/.
"""

import os

_base = os.environ.get("PARLEY_MUTMUT_HITS")
if _base:
    import mutmut.stats as _stats

    _generation = _base + ".generation"
    _state: dict = {"seen": set(), "generation": None, "file": None}

    def _record(name: str, caller: str | None = None) -> None:
        try:  # read on every hit: timestamps are too coarse to tell two quick tests apart
            with open(_generation) as f:
                generation = f.read()
        except FileNotFoundError:
            generation = None
        if generation != _state["generation"]:
            _state["generation"], _state["seen"] = generation, set()
        if name in _state["seen"]:
            return
        _state["seen"].add(name)
        if _state["file"] is None:
            _state["file"] = open(f"{_base}.{os.getpid()}", "a", buffering=1)
        _state["file"].write(name + "\n")

    _stats.record_trampoline_hit = _record
