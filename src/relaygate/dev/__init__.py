"""Development tooling: local Redis/PostgreSQL, ``relaygate dev``, and the mock upstream.

Nothing in the production package imports from here (tests/unit/test_import_graph.py checks
it); only the ``relaygate dev`` and ``relaygate mock-upstream`` commands reach in, lazily.
"""
