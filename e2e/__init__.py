"""End-to-end tests: site replicas and real Chromium with the Parley extension (DESIGN.md "Running and testing")."""
