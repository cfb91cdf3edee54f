# Root conftest: its presence puts the repository root on sys.path, so tests/ and e2e/ can share
# the process helpers in tests/procs.py.
