"""MLS (RFC 9420) for Parley's groups (issue 14), one module per RFC concept, on ``cryptography``.

* :mod:`bridge.mls.tls` - TLS presentation-language encoding (§2.1)
* :mod:`bridge.mls.treemath` - array-based tree math (§4.2, Appendix C)
* :mod:`bridge.mls.suite` - cipher suites 0x0001 and 0x0003 and the labelled operations (§5)
* :mod:`bridge.mls.key_schedule` - group context, key schedule, exporters, PSKs, secret tree (§8, §9)
* :mod:`bridge.mls.messages` - the wire structures (§6, §7, §10, §12)
* :mod:`bridge.mls.vectors` - the working group's test vectors: ``python -m bridge.mls.vectors FILE...``

docs/MLS.md says what is built and what is not yet.
"""
