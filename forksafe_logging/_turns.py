"""When a record of the top must wait for the listener: the state both sides share.

The listener thread (:mod:`forksafe_logging._server`) writes three flags as
its rounds go: busy (something read is not dispatched yet), idle (no child
connected since the last empty round) and stalled (a record of the top gave
up waiting). Every record of the top reads them in :meth:`Turns.wait_turn`
(through the patch of :mod:`forksafe_logging._order`) and, when a child is
connected, looks at the connections without disturbing the listener's
selector. Kept apart from the listener so that what the top pays per record
is in one short class, and the flags are written in one place.
"""

from __future__ import annotations

import os
import select
import threading

from forksafe_logging import _endpoint, _order, _reach
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

#: How long a record of the top waits at most for the listener to handle
#: what children sent before it (:meth:`Turns.wait_turn`).
ORDER_WAIT = 1.0

# Bound when the package is imported, as in _channel: gevent's patch_all()
# takes select.epoll away, and a top patched after importing us still makes
# its listener.
_epoll = getattr(select, "epoll", None)
_poll = select.poll


class Turns:
    """Whether the top's records wait for the listener, and the wait itself.

    ``catch_up(timeout)`` asks the listener for a round and returns whether
    it finished one within ``timeout`` seconds (False: it is stuck, or
    stopping). A record that gave up waiting counts in
    ``stats["order_waits_expired"]``, the listener's.
    """

    def __init__(self, catch_up: Callable[[float], bool], stats: Dict[str, int]) -> None:
        self.pid = os.getpid()
        self._catch_up = catch_up
        self._stats = stats
        #: The listener's thread, once it runs: a record it logs never waits.
        self.listener: Optional[threading.Thread] = None
        #: The authenticated connections, for the top's threads to look at
        #: without disturbing the listener's selector. epoll where there is
        #: one: threads may wait on it at once, and a look costs the same
        #: however many children are connected. A poll() object refuses two
        #: callers at once: there, the top's threads take turns (the
        #: listener never polls this one).
        self._watch: Any = None
        self._watch_lock = threading.Lock()  # for poll() only
        if _epoll is not None:
            with state.fd_lock:
                try:
                    self._watch = _epoll()
                except OSError:  # out of descriptors: poll() needs none
                    pass
                else:
                    state.child_closes.append(self._watch.fileno())
        if self._watch is None:
            self._watch = _poll()
            self._peek: Callable[[int, int], List[Any]] = self._peek_in_turn
        else:
            self._peek = self._watch.poll  # bound once: every record of the top calls it
        self._watched = 0
        #: True from the start of a round (before anything is read) until
        #: nothing read is left undispatched, held-over records included.
        #: Written by the listener only; the top reads it without a lock.
        self.busy = False
        #: No connection has been authenticated since the last round that
        #: ended with none open and nothing held: the top's records need not
        #: wait. Cleared before a sender can send; set only by the listener,
        #: at the end of a round.
        self._idle = True
        #: Set when a record of the top gave up waiting (the listener is
        #: stuck in a handler); cleared by the next round. Until then the
        #: top's records do not wait: one stuck handler costs one wait.
        self._stalled = False
        #: See :meth:`set_order_wait`.
        self.order_wait = ORDER_WAIT
        #: The connections' rings (_ring.Reader), replaced whole by the
        #: listener as they come and go.
        self.rings: Tuple[Any, ...] = ()

    # -- written by the listener thread ---------------------------------------

    def watch(self, fd: int) -> None:
        """A connection is authenticated: from now on its records go first.

        Called before the sender learns it may send: from then on it may
        send, return, and cause a record of the top.
        """
        self._watch.register(fd, select.POLLIN)  # = EPOLLIN
        self._watched += 1
        self._idle = False

    def unwatch(self, fd: int) -> None:
        """An authenticated connection is closed."""
        try:
            self._watch.unregister(fd)
            self._watched -= 1
        except (KeyError, OSError):  # not registered (poll; epoll)
            pass

    def round_ended(self, held_over: bool) -> None:
        """A round dispatched what it could; ``held_over``: records wait for the next."""
        self._stalled = False
        self.busy = held_over
        if not self._watched and not held_over:
            self._idle = True

    def never_wait(self) -> None:
        """The listener is gone: no record of the top waits for it again."""
        _order.disable(self)
        self._stalled = True

    # -- read by every record of the top ---------------------------------------

    def wait_turn(self) -> None:
        """Let the records that children sent before now go first; called before the top's own.

        Waits while the listener handles what has arrived, at most
        :attr:`order_wait` seconds; a record that waited that long goes ahead
        (the listener is stuck in a handler), and until the listener
        finishes a round the top's records do not wait again.
        """
        if self._idle or self._stalled:
            return  # no child connected, or the listener is stuck: nothing to wait for
        # In this order. A record that this one follows was sent before
        # this one was made, so before this poll(): if the poll finds no
        # connection with data, the listener had read that record already,
        # and it is dispatched unless the listener is still busy.
        try:
            behind = bool(self._peek(0, 1))
        except (OSError, ValueError):
            return  # closed by stop() meanwhile: the listener is gone
        if not behind:
            for ring in self.rings:  # committed there before now, as in a socket
                if ring.behind():
                    behind = True
                    break
        if not behind and not self.busy:
            return
        if self.pid != os.getpid():
            return  # a child forked without the at-fork hooks (os.fork() from C)
        if threading.current_thread() is self.listener or _reach.inside_a_handler():
            # A record of a handler that the listener runs, or logged from
            # inside a handler whose lock the listener may be waiting for:
            # waiting would be for itself.
            return
        if not self._catch_up(self.order_wait):
            self._stalled = True
            self._stats["order_waits_expired"] += 1

    def _peek_in_turn(self, timeout: int, _most: int) -> List[Any]:
        with self._watch_lock:
            return self._watch.poll(timeout)  # type: ignore[no-any-return]

    def set_order_wait(self, seconds: float) -> None:
        """How long a record of this process waits its turn at most; 0: it never waits."""
        self.order_wait = seconds
        if seconds > 0:
            _order.enable(self)
        else:
            _order.disable(self)

    def close(self) -> None:
        """Let go of the descriptor (epoll's; poll() has none); under ``state.fd_lock``."""
        if hasattr(self._watch, "fileno"):
            _endpoint.forget_descriptor(self._watch.fileno())
            self._watch.close()
