"""The listener's connections: their handshake, reading frames into records.

Every connection is registered in the listener's selector; the
:class:`~forksafe_logging._door.Door` takes new ones, :class:`Inbox` reads
them. A new connection must open with a hello, a random nonce and its MAC
keyed with the tree's secret key, within :data:`HANDSHAKE_TIMEOUT`; the
listener answers with a MAC of the nonce keyed apart, and with a ring
(:mod:`~forksafe_logging._ring`) where it can; then the ring, or else the
connection, carries frames (:mod:`forksafe_logging._wire`), which
:meth:`Inbox.read` turns into records waiting in :attr:`Inbox.incoming` for
the listener's round to order and dispatch them (:mod:`forksafe_logging._server`).
"""

from __future__ import annotations

import logging
import selectors
import socket
import time

from forksafe_logging import _decode, _endpoint, _reach, _ring, _turns, _wire

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
        "ring",
        "ring_buffer",
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
        #: Where its frames come, if it was given a ring (_ring); the
        #: socket then brings only wake-up frames, and the sender's end.
        self.ring: Optional[_ring.Reader] = None
        self.ring_buffer = bytearray()


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
        #: Whether new connections get a ring; those that have one.
        self.rings_on = _ring.supported()
        self.ringed: Dict[Connection, None] = {}

    def close(self, conn: Connection) -> None:
        """Forget ``conn`` everywhere it is registered, and close its socket."""
        fd = conn.sock.fileno()
        if conn.authenticated and fd >= 0:
            self._turns.unwatch(fd)
        if conn.ring is not None:
            self.ringed.pop(conn, None)
            self._turns.rings = tuple(c.ring for c in self.ringed)  # type: ignore[misc]
            conn.ring.close()
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
                # The sender died or gave up: what it committed to its ring
                # is all there, and read first.
                if conn.ring is None or take_ring(self, conn):
                    _end(self, conn)
                return False
            conn.buffer += into[:got]
            if not self._parse(conn, conn.buffer):
                self.close(conn)
                return False
            # A short read emptied the queue as it was when it began.
            if got < _RECV_SIZE:
                return False
            taken += got
            if taken >= _ROUND_LIMIT:
                return True

    def _parse(self, conn: Connection, buf: bytearray) -> bool:
        """Handle every whole frame in ``buf`` (``conn``'s socket's or ring's); False: drop it.

        The two streams are parsed apart: a sender writes its frames to one
        of them only (the socket then brings wake-up frames).
        """
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
                if length == 1 and buf[pos + 4] in _ONE_BYTE_TAGS:
                    pos = end
                    if buf[end - 1] == _LEVELS_TAG:
                        _send_levels(conn)
                    continue  # a wake-up frame woke the listener: that is all
                decoded: Optional[Tuple[str, Any]]
                try:
                    payload = view[pos + 4 : end].tobytes()
                    if buf[pos + 4] == _FAST_TAG:
                        # The fast path's hot loop: the head and the line
                        # are all the listener reads (see _plans).
                        fast = _decode.fast_item(definitions, payload)
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


def _end(inbox: Inbox, conn: Connection) -> None:
    """``conn`` was read to its end: kept until its records are handled and confirmed."""
    if conn.buffer or conn.ring_buffer:
        # The sender died, or gave up, in the middle of a frame.
        inbox._stats["truncated"] += 1
        conn.buffer.clear()
        conn.ring_buffer.clear()
    conn.ended = True
    inbox.ending.append(conn)
    try:
        inbox._selector.unregister(conn.sock)  # else readable in every round
    except (KeyError, ValueError):
        pass


def take_ring(inbox: Inbox, conn: Connection) -> bool:
    """Parse what ``conn``'s sender committed to its ring; False: dropped."""
    buf = conn.ring_buffer
    if not conn.ring.take(buf):  # type: ignore[union-attr]
        inbox._stats["garbage"] += 1
        inbox.close(conn)
        return False
    if buf and not inbox._parse(conn, buf):
        inbox.close(conn)
        return False
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
    answer = _endpoint.listener_answer(inbox._key, nonce)
    try:
        # Fits: nothing else was ever sent on this socket.
        if inbox.rings_on:
            _ring.answer(conn.sock, answer, lambda ring: _ringed(inbox, conn, ring))
        else:
            conn.sock.send(answer)
    except OSError:
        return False
    inbox.pending.pop(conn, None)
    return True


def _ringed(inbox: Inbox, conn: Connection, ring: _ring.Reader) -> None:
    """``conn`` gets ``ring``: read in every round, and looked at by the top's records (_turns)."""
    conn.ring = ring
    inbox.ringed[conn] = None
    inbox._stats["rings"] += 1
    inbox._turns.rings = tuple(c.ring for c in inbox.ringed)  # type: ignore[misc]


_LEVELS_TAG = _wire.LEVELS[0]
_ONE_BYTE_TAGS = (_LEVELS_TAG, _wire.WAKE[0])
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
