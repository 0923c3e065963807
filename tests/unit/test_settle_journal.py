"""The ledger journal (relaygate.settles): what a dead relay left is adopted once, in
order, without what was already applied; a live relay's journal is never taken."""

from __future__ import annotations

import pathlib

from relaygate.ledger import SettleCall
from relaygate.settles import (
    Journal,
    LostReserve,
    Operation,
    adopt_journals,
    read_journal,
    to_record,
)

KEYS = ("t", "u", "d", "m", "s", "o", "r", "x")


def _call(rid: str) -> SettleCall:
    return SettleCall(
        KEYS, 10, 7, ("t1", "u1"), f"{rid}|1|1|d|m|i|10", rid, b'{"rid":"%s"}' % rid.encode()
    )


def test_journal_round_trip_skips_done_and_torn_lines(tmp_path: pathlib.Path) -> None:
    journal = Journal(tmp_path, "rg-dead")
    ops: list[Operation] = [
        _call("a"),
        LostReserve("r", ("t", "u", "d", "m"), "b|1|1|d|m|i"),
        _call("c"),
    ]
    for seq, op in enumerate(ops, 1):
        journal.append(to_record(seq, op))
    journal.append({"done": 1})
    with journal.path.open("ab") as fh:
        fh.write(b'{"seq": 4, "kind": "sett')  # a crash mid-line
    assert read_journal(journal.path) == ops[1:]


def test_adopt_takes_dead_journals_once_and_leaves_live_ones(tmp_path: pathlib.Path) -> None:
    dead = Journal(tmp_path, "rg-dead")
    dead.append(to_record(1, _call("a")))
    dead.close(empty=False)  # the process died: its lock is gone
    live = Journal(tmp_path, "rg-live")
    live.append(to_record(1, _call("b")))  # still open: locked
    other = Journal(tmp_path, "other-dead")
    other.append(to_record(1, _call("c")))
    other.close(empty=False)
    taken: list[Operation] = []
    own = tmp_path / "rg-me.ledger.jsonl"
    assert adopt_journals(tmp_path, "rg", own, taken.extend) == 1
    assert taken == [_call("a")]
    assert not dead.path.exists() and live.path.exists() and other.path.exists()
    assert adopt_journals(tmp_path, "rg", own, taken.extend) == 0
    live.close(empty=True)
    assert not live.path.exists()
