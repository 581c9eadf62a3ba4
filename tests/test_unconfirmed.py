"""A sender's unconfirmed records (forksafe_logging._unconfirmed), over real socket pairs.

A sender keeps the connections it gave up mid-frame (an exception from a
signal handler in the middle of a send) until the listener has confirmed
what they carried. Past MAX_RETIRED of them the oldest is settled early:
never dropped with records the listener has not confirmed, which a top
killed afterwards would take along unshown (test_chaos found it on a loaded
machine; it needs a listener that is behind and then dies).
"""

from __future__ import annotations

import socket
from typing import List, Tuple

import pytest

from forksafe_logging import _unconfirmed, _wire

pytestmark = pytest.mark.timeout(60)


def _show(record: object) -> str:
    raise AssertionError("not called: a frame that is not one shows as its repr")


def _give_up(count: int) -> Tuple[_unconfirmed.Unsettled, List[socket.socket]]:
    """``count`` connections given up mid-frame (a record each, unconfirmed); their other ends."""
    unsettled = _unconfirmed.Unsettled()
    listener_ends = []
    for n in range(count):
        mine, theirs = socket.socketpair()
        listener_ends.append(theirs)
        ledger = _unconfirmed.Ledger(mine)
        ledger.records.append((1, None, 0, b"record %d" % n, _show))  # type: ignore[arg-type]
        unsettled.retire(ledger)
        unsettled.shut(ledger)
    return unsettled, listener_ends


def test_past_the_limit_the_oldest_is_not_dropped_unshown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The listener is behind, then dies: every record given up is shown, the oldest's too."""
    count = _unconfirmed.MAX_RETIRED + 1
    unsettled, listener_ends = _give_up(count)
    assert len(unsettled.retired) == _unconfirmed.MAX_RETIRED
    for end in listener_ends:  # the top dies: the kernel closes its ends
        end.close()
    unsettled.bury(None, "the listener died")
    unsettled.show_dead()
    err = capsys.readouterr().err
    assert [n for n in range(count) if "b'record %d'" % n not in err] == []
    assert not unsettled


def test_the_oldest_confirmed_by_then_is_not_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """Settled early, the oldest waits for the listener's end: what it confirmed is not shown."""
    count = _unconfirmed.MAX_RETIRED + 1
    unsettled, listener_ends = _give_up(count)
    # The listener handles the oldest connection: confirms its record, ends it.
    listener_ends[0].sendall(_wire.CONFIRM.pack(1))
    listener_ends[0].close()
    unsettled.show_dead()
    assert "record 0" not in capsys.readouterr().err
    assert len(unsettled.retired) == _unconfirmed.MAX_RETIRED
    for end in listener_ends[1:]:
        end.close()
