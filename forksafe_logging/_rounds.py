"""The listener's rounds: what was read goes out in the order it was made, and is confirmed.

A round of the listener (``_server.Server``) reads every connection with
something to read to its end, into the inbox's ``incoming`` list; then
:meth:`Rounds.release` dispatches what can no longer be overtaken, oldest
first, holds the rest for one round, tells each sender how many of its
records are handled, and closes the connections that ended with nothing of
theirs held.
"""

from __future__ import annotations

import operator

from forksafe_logging import _plans, _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List

    from forksafe_logging._inbox import Connection, Inbox, Item


class Rounds:
    """Records held over from the last round, and the release of each round's."""

    __slots__ = ("_dispatch", "_inbox", "_plans", "_turns", "held")

    def __init__(
        self,
        inbox: Inbox,
        dispatch: Callable[[str, Any], None],
        turns: Any,
        plans: _plans.Plans,
    ) -> None:
        self._inbox = inbox
        self._dispatch = dispatch
        self._plans = plans
        #: The top's records wait for these rounds (``_turns.Turns``).
        self._turns = turns
        #: Records made after the last round's cutoff (see :meth:`release`).
        self.held: List[Item] = []

    def release(self, cutoff: float) -> None:
        """Dispatch, oldest first, what can no longer be overtaken.

        A record is made (``created``) after every record its process knew
        of through any channel (a pipe, a pool's result, ``waitpid``) had
        been *sent*: its sender's logging call had returned. So a record
        made before ``cutoff`` follows only records that were in the
        kernel's buffers at ``cutoff``, and this round, which looked at
        every connection after ``cutoff`` and read each to its end, has
        them all: the round's records made before ``cutoff`` and the ones
        held over from the last round go out now, sorted by ``created``.
        Those made after ``cutoff`` may follow records still on their way:
        held for one round, which reads those too.
        """
        inbox = self._inbox
        if inbox.wanted:
            self._plans.offer(inbox.wanted)
        incoming = inbox.incoming
        held = self.held
        if not incoming and not held:
            if inbox.ending:
                self._close_ended(held)
            self._turns.round_ended(False)
            return
        inbox.incoming = []
        ready = held
        later: List[Item] = []
        self.held = later
        for item in incoming:
            (ready if item[0] < cutoff else later).append(item)
        # Stable: records made at the same instant keep their arrival order.
        ready.sort(key=_made)  # the time it was made: the tuple's first item
        dispatch = self._dispatch
        run: List[Item] = []
        for item in ready:
            record = item[2]
            if record.__class__ is tuple:  # a _plans.Fast
                # Lines of one plan in a row are written together.
                if run and run[0][2][0] != record[0]:
                    self._plans.write(run)
                    run = []
                run.append(item)
                continue
            if run:
                self._plans.write(run)
                run = []
            dispatch(item[1], record)
        if run:
            self._plans.write(run)
        _confirm(ready, later)
        if inbox.ending:
            self._close_ended(later)
        self._turns.round_ended(bool(later))

    def forget(self) -> None:
        """Drop what is held, and the connections waiting for it (the listener died)."""
        self.held = []
        self._inbox.ending = []

    def _close_ended(self, held: List[Item]) -> None:
        """Close the connections read to their end whose records are all handled."""
        waiting = {item[3] for item in held}
        ending: List[Connection] = []
        for conn in self._inbox.ending:
            if conn in waiting:
                ending.append(conn)
            elif conn.sock.fileno() >= 0:
                self._inbox.close(conn)
        self._inbox.ending = ending


def _confirm(ready: List[Item], later: List[Item]) -> None:
    """Tell the senders of ``ready`` how many of their records are handled.

    Counted up to the first record of the connection still held over: the
    sender learns a number, not a list. Sent without waiting: a sender that
    does not read its confirmations has a full buffer, and a confirmation
    that cannot go now is covered by the next one.
    """
    first_held: Dict[Connection, int] = {}
    for item in later:
        conn, number = item[3], item[4]
        if number < first_held.get(conn, number + 1):
            first_held[conn] = number
    for conn in {item[3] for item in ready}:
        upto = first_held.get(conn, conn.received + 1) - 1
        if upto > conn.confirmed and conn.sock.fileno() >= 0:
            try:
                conn.sock.send(_wire.CONFIRM.pack(upto))
            except OSError:
                continue
            conn.confirmed = upto


_made = operator.itemgetter(0)
