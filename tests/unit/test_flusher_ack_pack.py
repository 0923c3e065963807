"""The flusher's hand-packed MULTI / XACK / XDEL / EXEC is the RESP redis-py would send."""

from __future__ import annotations

import hiredis

from relaygate.flusher import pack_xack_xdel


def test_pack_xack_xdel_is_the_commands_packed_one_by_one() -> None:
    by_stream = {"p:s0": [b"1-0", b"2-5"], "p:s3": [b"1700000000000-12"]}
    want = b"".join(
        [
            hiredis.pack_command(("MULTI",)),
            hiredis.pack_command(("XACK", "p:s0", "flushers", b"1-0", b"2-5")),
            hiredis.pack_command(("XDEL", "p:s0", b"1-0", b"2-5")),
            hiredis.pack_command(("XACK", "p:s3", "flushers", b"1700000000000-12")),
            hiredis.pack_command(("XDEL", "p:s3", b"1700000000000-12")),
            hiredis.pack_command(("EXEC",)),
        ]
    )
    assert b"".join(pack_xack_xdel("flushers", by_stream)) == want


def test_pack_xack_xdel_of_nothing_is_an_empty_transaction() -> None:
    assert b"".join(pack_xack_xdel("g", {})) == b"*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nEXEC\r\n"
