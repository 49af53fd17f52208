# -*- test-case-name: tests.test_bench -*-
"""
imd's benchmark: ``python -m imd.bench SCENARIO`` (see docs/benchmarks.rst).

It starts a fresh imd (or targets a running one), writes its users straight
into the database, spreads long-connection clients over load-generator
processes and runs a scenario: ``connect``, ``p2p``, ``group``,
``presence``, or ``all`` of them.  The bare relay (:mod:`imd.bench.relay`),
started by the tool in the same run, gives the floor imd is quoted against.
"""
