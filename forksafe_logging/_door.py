"""Where the listener's connections come in: the listening socket, and pending handshakes.

:class:`Door` accepts connections (bounded: at most :data:`~forksafe_logging._inbox.MAX_PENDING`
handshakes wait, each for :data:`~forksafe_logging._inbox.HANDSHAKE_TIMEOUT`;
``accept()`` pauses while descriptors run out) and hands each to the
:class:`~forksafe_logging._inbox.Inbox`, which reads its hello and its frames.
"""

from __future__ import annotations

import selectors
import time

from forksafe_logging import _endpoint, _inbox
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    import socket
    from typing import Dict, List, Optional

#: After accept() fails for want of descriptors, the listening socket is
#: left alone this long: it stays readable, and retrying at once would spin.
ACCEPT_PAUSE = 0.1


class Door:
    """Where connections come in: the listening socket, and the handshakes not answered yet.

    Used by the listener thread only. ``selector`` is the listener's: the
    door pauses the listening socket there while descriptors run out, and
    hands each accepted connection to ``inbox``.
    """

    def __init__(
        self,
        listening: socket.socket,
        selector: selectors.BaseSelector,
        inbox: _inbox.Inbox,
        stats: Dict[str, int],
    ) -> None:
        self._listening = listening
        self._selector = selector
        self._inbox = inbox
        self._stats = stats
        #: While accepting is paused (see ACCEPT_PAUSE): when it resumes;
        #: the listening socket is out of the selector meanwhile.
        self._accept_resumes = 0.0

    def next_deadline(self) -> Optional[float]:
        """Seconds until a pending handshake expires or accepting resumes; None: no limit."""
        deadlines = []
        if self._inbox.pending:
            deadlines.append(next(iter(self._inbox.pending)).deadline)
        if self._accept_resumes:
            deadlines.append(self._accept_resumes)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def expire(self) -> None:
        """Close the handshakes past their deadline; resume a paused accept() when it is time."""
        now = time.monotonic()
        pending = self._inbox.pending
        while pending:
            oldest = next(iter(pending))
            if oldest.deadline > now:
                break
            self._stats["handshake_timeouts"] += 1
            self._inbox.close(oldest)
        if self._accept_resumes and now >= self._accept_resumes:
            self._accept_resumes = 0.0
            self._selector.register(self._listening, selectors.EVENT_READ, None)

    def stop_accepting(self) -> None:
        """Take the listening socket out of the selector for good (the listener stops).

        New connections wait in the backlog until the socket is closed. A
        paused accept() is not resumed: the socket is out already.
        """
        if not self._accept_resumes:
            self._selector.unregister(self._listening)
        self._accept_resumes = 0.0

    def accept(self) -> List[_inbox.Connection]:
        """Take every connection waiting in the backlog; each must send its hello.

        Returns the connections taken: their senders sent the hello as they
        connected, so it is read in the same round (one wake-up less before
        the sender's first record).
        """
        taken: List[_inbox.Connection] = []
        while True:
            with state.fd_lock:
                try:
                    sock, _ = self._listening.accept()
                except (BlockingIOError, InterruptedError):  # none left
                    return taken
                except OSError:
                    # Out of descriptors (EMFILE) or memory: the connection
                    # stays in the backlog, and the socket stays readable.
                    self._stats["accept_errors"] += 1
                    self._selector.unregister(self._listening)
                    self._accept_resumes = time.monotonic() + ACCEPT_PAUSE
                    return taken
                state.child_closes.append(sock.fileno())
            try:
                sock.setblocking(False)
            except OSError:
                _endpoint.close_listed(sock)
                continue
            inbox = self._inbox
            conn = _inbox.Connection(sock)
            inbox.connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            inbox.pending[conn] = None
            if len(inbox.pending) > _inbox.MAX_PENDING:
                self._stats["handshakes_refused"] += 1
                inbox.close(next(iter(inbox.pending)))
            self._stats["connections"] += 1
            taken.append(conn)
