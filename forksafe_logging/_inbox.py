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
    from typing import Any, Dict, List, Optional, Tuple

    #: A record read: when it was made, its route, the record (or, on the
    #: fast path, its lines: a _plans.Fast), and which record of which
    #: connection it was.
    Item = Tuple[float, str, Any, "Connection", int]

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

    Used by the listener thread only. ``selector`` is the listener's, in which
    each connection is registered (by the :class:`Door`). ``turns`` learns of
    each authenticated connection (see :class:`forksafe_logging._turns.Turns`).
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
        self._into = memoryview(bytearray(_RECV_SIZE))
        #: Connections whose hello has not come whole yet, oldest first
        #: (a dict as an ordered set).
        self.pending: Dict[Connection, None] = {}
        #: Records read and not yet taken by the listener's round.
        self.incoming: List[Item] = []
        #: ``(connection, name, level)`` defined this round: offered a plan (_plans).
        self.wanted: List[Tuple[Connection, str, int]] = []
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
        into = self._into
        while True:
            try:
                # Into one reused buffer: recv() would allocate (and, at this
                # size, map and unmap) a new one for every read.
                got = conn.sock.recv_into(into)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                got = 0
            if not got:
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
            conn.buffer += into[:got]
            if not self._parse(conn):
                self.close(conn)
                return False
            # A short read emptied the queue as it was when it began.
            if got < _RECV_SIZE:
                return False
            taken += got
            if taken >= _ROUND_LIMIT:
                return True

    def _parse(self, conn: Connection) -> bool:
        """Handle every whole frame in ``conn.buffer``; False to drop the connection."""
        buf = conn.buffer
        pos = 0
        if not conn.authenticated:
            if len(buf) < _endpoint.HELLO_SIZE:
                return True
            if not _hello(self, conn):
                return False
            pos = _endpoint.HELLO_SIZE
        unpack = _wire.HEADER.unpack_from
        feed = conn.decoder.feed
        definitions = conn.decoder.definitions
        incoming = self.incoming
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
                    _send_levels(conn)
                    continue
                decoded: Optional[Tuple[str, Any]]
                try:
                    payload = view[pos + 4 : end].tobytes()
                    if buf[pos + 4] == _FAST_TAG:
                        # The fast path's hot loop: the head and the line
                        # are all the listener reads (see _plans).
                        fast = _fast(definitions, payload)
                        if fast.__class__ is tuple:
                            pos = end
                            conn.received += 1
                            incoming.append((fast[4], "", fast, conn, conn.received))
                            continue
                        decoded = fast
                    else:
                        decoded = feed(payload)
                except _decode.Garbage:
                    self._stats["garbage"] += 1
                    return False
                pos = end
                _took(self, conn, decoded, payload)
        finally:
            view.release()
        if pos:
            del buf[:pos]
        return True


def _took(
    inbox: Inbox, conn: Connection, decoded: Optional[Tuple[str, Any]], payload: bytes
) -> None:
    """A frame read the usual way: its record waits for the round; a definition, for a plan."""
    if decoded is not None:
        route, record = decoded
        conn.received += 1
        inbox.incoming.append((_stamp(record), route, record, conn, conn.received))
    elif payload[:1] == b"D":
        _want(conn, inbox.wanted)


def _hello(inbox: Inbox, conn: Connection) -> bool:
    """Check the sender's hello (a nonce and its MAC) and answer it; False: drop."""
    nonce = _endpoint.hello_nonce(inbox._key, bytes(conn.buffer[: _endpoint.HELLO_SIZE]))
    if nonce is None:
        inbox._stats["auth_failures"] += 1
        return False
    # Watched before the answer goes (see Turns.watch).
    conn.authenticated = True
    inbox._turns.watch(conn.sock.fileno())
    try:
        # Fits: nothing else was ever sent on this socket.
        conn.sock.send(_endpoint.listener_answer(inbox._key, nonce))
    except OSError:
        return False
    inbox.pending.pop(conn, None)
    return True


def _fast(definitions: Dict[int, Tuple[str, Dict[str, Any]]], payload: bytes) -> Any:
    """An ``F`` frame: its lines for the plans (a :data:`_plans.Fast`), or ``(route, record)``."""
    head = _decode.fast_head(payload)
    defined = definitions.get(head[3])
    if defined is None:
        raise _decode.Garbage("a fast record of an undefined number")
    route, template = defined
    if route:  # never sent so: only the top's logger tree has plans
        return route, _decode.fast_record(template, head, payload)
    if head[5] == 1:
        (size,) = _PART(payload, _FIRST_LINE)
        line = payload[_FIRST_LINE + 4 : _FIRST_LINE + 4 + size]
        if len(line) != size:
            raise _decode.Garbage("a fast record cut short")
        lines: Tuple[Any, ...] = (line,)
    else:
        lines = tuple(_decode.fast_parts(payload, head[5])[0])
    return (head[4], template, payload, lines, head[0])


_PART = _wire.PART.unpack_from
_FIRST_LINE = 1 + _wire.FAST_HEAD.size


_LEVELS_TAG = _wire.LEVELS[0]
_FAST_TAG = ord("F")


def _stamp(record: logging.LogRecord) -> float:
    """When ``record`` was made; 0 if a record factory left something odd there."""
    created = record.created
    if created.__class__ is float:
        return created  # type: ignore[no-any-return]
    try:
        return float(created)
    except (TypeError, ValueError, OverflowError):
        return 0.0


def _want(conn: Connection, wanted: List[Tuple[Connection, str, int]]) -> None:
    """After a ``D`` frame: a plan may be offered for its logger and level (the top's tree only)."""
    route, template = conn.decoder.definitions[conn.decoder.defined]
    if not route:
        wanted.append((conn, template["name"], template["levelno"]))


def _send_levels(conn: Connection) -> None:
    """Answer a sender that asks for this process's logger levels (see _wire.LEVELS)."""
    try:
        conn.sock.send(_wire.levels_message(*_reach.levels()))
    except OSError:
        pass  # fits: asked before any record, so nothing else is queued
