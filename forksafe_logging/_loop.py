"""The listener thread's work: its rounds, from the selector's events to the dispatch.

Each round reads every readable connection to its end (:mod:`~forksafe_logging._inbox`),
then releases what can go in order (:mod:`~forksafe_logging._rounds`); between rounds,
the work other threads ask of it (:mod:`~forksafe_logging._requests`). Built and
started by :class:`forksafe_logging._server.Server`, which owns its lifetime.
"""

from __future__ import annotations

import socket
import time

from forksafe_logging import _endpoint, _inbox, _order, _ring, _router

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    import selectors
    from typing import Any, Callable, List, Optional, Tuple

    from forksafe_logging import _door
    from forksafe_logging._requests import Requests
    from forksafe_logging._rounds import Rounds
    from forksafe_logging._turns import Turns


#: Seconds a sleeping listener with rings looks at them at the latest.
RING_BACKSTOP = 1.0
#: After a round that took bytes from rings, the listener looks at them
#: again after this long without being woken (see _wait).
RING_LINGER = 0.001


class Loop:
    """The listener thread's rounds, and its last one."""

    def __init__(
        self,
        *,
        listening: socket.socket,
        selector: selectors.BaseSelector,
        door: _door.Door,
        inbox: _inbox.Inbox,
        rounds: Rounds,
        turns: Turns,
        requests: Requests,
    ) -> None:
        self._listening = listening
        self._selector = selector
        self._door = door
        self._inbox = inbox
        self._rounds = rounds
        self._turns = turns
        self._requests = requests
        #: Set by the last round (:meth:`finish`): the thread ends after it.
        self.stopping = False
        self._fence = _ring.listener_fence()
        #: Whether the last round took bytes from a ring.
        self._took = False

    def run(self) -> None:
        """The thread's target: rounds until it stops, or dies."""
        try:
            self._rounds_until_stopped()
        finally:
            if not self.stopping:
                # Died (a bug of ours): senders must not wait for it. With the
                # listening socket and every connection closed, a sender's
                # next write fails, its new connection is refused, and it
                # writes to its stderr from then on. What was sent before
                # that is handled first, if this thread still can.
                _router.warn("the listener thread stopped; processes of the tree write to stderr")
                _order.disable(self._turns)  # the top's records: no waiting for this thread
                try:
                    self._last_reads()
                except BaseException:
                    pass
                self._abandon_connections()

    def _abandon_connections(self) -> None:
        self._turns.never_wait()
        _endpoint.close_listed(self._listening)
        for conn in list(self._inbox.connections.values()):
            self._inbox.close(conn)
        self._rounds.forget()

    def _rounds_until_stopped(self) -> None:
        rounds = self._rounds
        while not self.stopping:
            try:
                # Held records go out in the next round: no waiting then.
                timeout = 0.0 if rounds.held else self._door.next_deadline()
                events = _wait(self._selector, self._turns.rings, timeout, self._took, self._fence)
                self._turns.busy = True
                cutoff = time.time()
                if events:
                    # Look again: what was sent before the cutoff is all
                    # readable now, on connections the first look may
                    # have found empty.
                    events = self._selector.select(0.0)
                wake = self._round(events, cutoff)
            except (OSError, ValueError):  # the selector was closed under us
                return
            if wake:
                self._requests.serve()

    def _last_reads(self) -> None:
        """Refuse what comes next, handle what has come, held-over records too."""
        _endpoint.close_listed(self._listening)
        connections = list(self._inbox.connections.values())
        _ring.close_all(self._turns.rings, self._fence)
        for conn in connections:
            # After SHUT_RD a sender's write fails at once; what the kernel
            # already holds for us can still be read.
            try:
                conn.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            while self._inbox.read(conn):  # to its end
                pass
        # Nothing more can come: what was held over goes out too, and is
        # confirmed. Only then closed: a sender whose write failed waits
        # for the end of its connection, and shows on its stderr only what
        # was not confirmed by then (see _channel).
        self._rounds.release(float("inf"))
        for conn in connections:
            if conn.sock.fileno() >= 0:
                self._inbox.close(conn)
        self._inbox.ending = []

    def _round(self, events: List[Tuple[Any, int]], cutoff: float) -> bool:
        """Read every connection in ``events`` to its end, then dispatch in order.

        Returns whether a request from another thread is waiting.
        """
        wake = False
        for key, _ in events:
            try:
                if key.fileobj is self._listening:
                    for conn in self._door.accept():
                        self._inbox.read(conn)  # its hello, and what followed
                elif key.fileobj == self._requests.wake_r:
                    wake = True
                else:
                    self._inbox.read(key.data)
            except BaseException as exc:
                # The thread must outlive any one connection's trouble:
                # if it died, every sender would wait for it forever.
                _router.warn("the listener hit an unexpected error: %r" % (exc,))
                if isinstance(key.data, _inbox.Connection):
                    self._inbox.close(key.data)
        self._took = _take_rings(self._inbox)
        # After the events: an answer that has arrived counts, however
        # long a handler kept this thread away.
        self._door.expire()
        self._rounds.release(cutoff)
        return wake

    def drain(self) -> None:
        """A round now: every record that reached the sockets before it is handled."""
        self._turns.busy = True
        cutoff = time.time()
        self._round(self._selector.select(0.0), cutoff)

    def finish(self, deadline: float) -> None:
        """The last round: handle what was sent, half-sent records until ``deadline``; stop."""
        self._door.stop_accepting()
        self.drain()
        _wait_half_frames(self._inbox, self._selector, deadline)
        # Senders may still be sending (forked children outlive the top).
        # What the kernel holds for us is handled; what comes after is
        # refused: a sender then gets EPIPE, and a new connection is
        # refused too, so it writes that record to its stderr. Nothing
        # is lost between the two without its sender knowing.
        self._last_reads()
        self.stopping = True


def _take_rings(inbox: _inbox.Inbox) -> bool:
    """Every ring, whether its sender woke the listener or not (a round reads all).

    Returns whether any had bytes.
    """
    took = False
    for conn in list(inbox.ringed):
        ring = conn.ring
        if not conn.ended and ring is not None:
            before = ring.r
            try:
                _inbox.take_ring(inbox, conn)
            except BaseException as exc:  # as for a connection's events
                _router.warn("the listener hit an unexpected error: %r" % (exc,))
                inbox.close(conn)
            took = took or ring.r != before
    return took


def _wait(
    selector: selectors.BaseSelector,
    rings: Tuple[_ring.Reader, ...],
    timeout: Optional[float],
    took: bool,
    fence: Callable[[], None],
) -> List[Tuple[Any, int]]:
    """The selector's events, after waiting up to ``timeout`` (None: no limit) for one.

    With rings, after a round that ``took`` bytes from them, more are likely
    on their way: the listener looks again after RING_LINGER, unasked (a
    sender that finds it awake sends no wake-up, a system call each).
    Otherwise it sleeps only once no ring has bytes waiting, and is woken
    by a sender's wake-up frame; the bound is in case of a bug, never the
    way records are found.
    """
    if not rings or timeout == 0.0:
        return selector.select(timeout)
    if took:
        return selector.select(RING_LINGER if timeout is None else min(timeout, RING_LINGER))
    if not _ring.sleep(rings, fence):
        return selector.select(0.0)
    try:
        return selector.select(RING_BACKSTOP if timeout is None else min(timeout, RING_BACKSTOP))
    finally:
        _ring.awake(rings)


def _wait_half_frames(
    inbox: _inbox.Inbox, selector: selectors.BaseSelector, deadline: float
) -> None:
    """Until ``deadline`` at most, read on while a sender is in the middle of a frame."""
    while any(c.buffer or c.ring_buffer for c in inbox.connections.values()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for key, _ in selector.select(min(remaining, 0.05)):
            if isinstance(key.data, _inbox.Connection):
                while inbox.read(key.data):
                    pass
        _take_rings(inbox)
