"""The listener's connections: accepting them, their handshake, reading frames into records.

The listening socket and every connection are registered in the listener's
selector; :class:`Door` takes new connections, :class:`Inbox` reads them. A new
connection must open with a hello, a random nonce and its MAC keyed with
the tree's secret key, within :data:`HANDSHAKE_TIMEOUT`; the listener
answers with a MAC of the nonce keyed apart; then the connection carries frames
(:mod:`forksafe_logging._wire`), which :meth:`Inbox.read` turns into records
waiting in :attr:`Inbox.incoming` for the listener's round to order and
dispatch them (:mod:`forksafe_logging._server`).
"""

from __future__ import annotations

import logging
import selectors
import socket
import time

from forksafe_logging import _decode, _endpoint, _reach, _turns, _wire
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    #: A record read: when it was made, its route, the record, and which
    #: record of which connection it was.
    Item = Tuple[float, str, logging.LogRecord, "Connection", int]

#: An unauthenticated connection is closed after this many seconds (a real
#: sender sends its hello as it connects)...
HANDSHAKE_TIMEOUT = 5.0
#: ...and no more than this many wait at once: the oldest is closed first.
MAX_PENDING = 64
#: After accept() fails for want of descriptors, the listening socket is
#: left alone this long: it stays readable, and retrying at once would spin.
ACCEPT_PAUSE = 0.1
_RECV_SIZE = 1 << 18
#: How much one round reads from one connection at most: more than a
#: sender's socket buffer holds (the channel asks for 1 MiB), so a round
#: reads at least all that was queued when it began, and a sender that never
#: pauses cannot keep the listener on its connection for ever.
_ROUND_LIMIT = 1 << 22


class Connection:
    """One sender's connection, as the listener sees it."""

    __slots__ = (
        "authenticated",
        "buffer",
        "confirmed",
        "deadline",
        "decoder",
        "ended",
        "received",
        "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.authenticated = False
        self.buffer = bytearray()
        self.decoder = _decode.Decoder()
        #: Records read from this connection, and how many of them the
        #: sender has been told are handled (see _wire.CONFIRM).
        self.received = 0
        self.confirmed = 0
        #: Read to its end: closed once what it carried is confirmed.
        self.ended = False


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
        inbox: Inbox,
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

    def accept(self) -> List[Connection]:
        """Take every connection waiting in the backlog; each must send its hello.

        Returns the connections taken: their senders sent the hello as they
        connected, so it is read in the same round (one wake-up less before
        the sender's first record).
        """
        taken: List[Connection] = []
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
            conn = Connection(sock)
            inbox.connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            inbox.pending[conn] = None
            if len(inbox.pending) > MAX_PENDING:
                self._stats["handshakes_refused"] += 1
                inbox.close(next(iter(inbox.pending)))
            self._stats["connections"] += 1
            taken.append(conn)


class Inbox:
    """The listener's connections, from their handshake to the records read from them.

    Used by the listener thread only. ``selector`` is the listener's, in
    which each connection is registered (by the :class:`Door`). ``turns``
    learns of each authenticated connection (see
    :class:`forksafe_logging._turns.Turns`).
    """

    def __init__(
        self,
        selector: selectors.BaseSelector,
        key: bytes,
        stats: Dict[str, int],
        turns: _turns.Turns,
    ) -> None:
        self._selector = selector
        self._key = key
        self._stats = stats
        self._turns = turns
        self.connections: Dict[int, Connection] = {}
        #: Connections whose hello has not come whole yet, oldest first
        #: (a dict as an ordered set).
        self.pending: Dict[Connection, None] = {}
        #: Records read and not yet taken by the listener's round.
        self.incoming: List[Item] = []
        #: Connections read to their end, not closed yet (the listener
        #: closes each once its records are handled and confirmed).
        self.ending: List[Connection] = []

    def close(self, conn: Connection) -> None:
        """Forget ``conn`` everywhere it is registered, and close its socket."""
        fd = conn.sock.fileno()
        if conn.authenticated and fd >= 0:
            self._turns.unwatch(fd)
        self.connections.pop(fd, None)
        self.pending.pop(conn, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        _endpoint.close_listed(conn.sock)

    def read(self, conn: Connection) -> bool:
        """Read what ``conn`` has queued, up to _ROUND_LIMIT; True if more may be left.

        At its end the connection is kept until its records are handled and
        confirmed (see :meth:`_close_ended`): the sender waits for that end
        to learn that no other confirmation will come.
        """
        if conn.ended or conn.sock.fileno() < 0:
            # Read to its end earlier (a flush drained it): its half frame
            # was counted then.
            return False
        taken = 0
        while True:
            try:
                data = conn.sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                data = b""
            if not data:
                if conn.buffer:
                    # The sender died, or gave up, in the middle of a frame.
                    self._stats["truncated"] += 1
                    conn.buffer.clear()
                conn.ended = True
                self.ending.append(conn)
                try:
                    self._selector.unregister(conn.sock)  # else readable in every round
                except (KeyError, ValueError):
                    pass
                return False
            conn.buffer += data
            if not self._parse(conn):
                self.close(conn)
                return False
            # A short read emptied the queue as it was when it began.
            if len(data) < _RECV_SIZE:
                return False
            taken += len(data)
            if taken >= _ROUND_LIMIT:
                return True

    def _parse(self, conn: Connection) -> bool:
        """Handle every whole frame in ``conn.buffer``; False to drop the connection."""
        buf = conn.buffer
        pos = 0
        if not conn.authenticated:
            # The sender's hello: a nonce and its MAC.
            if len(buf) < _endpoint.HELLO_SIZE:
                return True
            nonce = _endpoint.hello_nonce(self._key, bytes(buf[: _endpoint.HELLO_SIZE]))
            if nonce is None:
                self._stats["auth_failures"] += 1
                return False
            # Watched before the answer goes (see Turns.watch).
            conn.authenticated = True
            self._turns.watch(conn.sock.fileno())
            try:
                # Fits: nothing else was ever sent on this socket.
                conn.sock.send(_endpoint.listener_answer(self._key, nonce))
            except OSError:
                return False
            self.pending.pop(conn, None)
            pos = _endpoint.HELLO_SIZE
        unpack = _wire.HEADER.unpack_from
        feed = conn.decoder.feed
        size = len(buf)
        view = memoryview(buf)
        try:
            while size - pos >= 4:
                (length,) = unpack(buf, pos)
                if length > _wire.MAX_FRAME or length == 0:
                    self._stats["garbage"] += 1
                    return False
                end = pos + 4 + length
                if end > size:
                    break
                if length == 1 and buf[pos + 4] == _LEVELS_TAG:
                    pos = end
                    self._send_levels(conn)
                    continue
                try:
                    decoded = feed(view[pos + 4 : end].tobytes())
                except _decode.Garbage:
                    self._stats["garbage"] += 1
                    return False
                pos = end
                if decoded is not None:
                    route, record = decoded
                    conn.received += 1
                    self.incoming.append((_stamp(record), route, record, conn, conn.received))
        finally:
            view.release()
        if pos:
            del buf[:pos]
        return True

    @staticmethod
    def _send_levels(conn: Connection) -> None:
        """Answer a sender that asks for this process's logger levels (see _wire.LEVELS)."""
        try:
            conn.sock.send(_wire.levels_message(*_reach.levels()))
        except OSError:
            pass  # fits: asked before any record, so nothing else is queued


_LEVELS_TAG = _wire.LEVELS[0]


def _stamp(record: logging.LogRecord) -> float:
    """When ``record`` was made; 0 if a record factory left something odd there."""
    created = record.created
    if created.__class__ is float:
        return created  # type: ignore[no-any-return]
    try:
        return float(created)
    except (TypeError, ValueError, OverflowError):
        return 0.0
