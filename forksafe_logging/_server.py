"""The process tree's listener: one thread in the top process that reads every channel.

Each process of the tree opens its own connection to a Unix socket (its
address and the handshake are :mod:`forksafe_logging._endpoint`'s). A
connection must first answer a random challenge with a MAC of the tree's
secret key; then it carries frames (:mod:`forksafe_logging._wire`). One
thread multiplexes all connections with a selector, decodes each frame into
a ``LogRecord`` and dispatches it in this process: through the logger tree
(route ``""``) or to a :class:`~forksafe_logging.QueueHandler`'s handlers
(its route name).
"""

from __future__ import annotations

import atexit
import logging
import os
import selectors
import socket
import threading
import time

from forksafe_logging import _compat, _endpoint, _order, _reach, _router, _streams, _turns, _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    #: A record read: when it was made, its route, the record, and which
    #: record of which connection it was.
    _Item = Tuple[float, str, logging.LogRecord, "_Connection", int]

#: An unauthenticated connection is closed after this many seconds (a real
#: sender answers the challenge at once)...
HANDSHAKE_TIMEOUT = 5.0
#: ...and no more than this many wait at once: the oldest is closed first.
MAX_PENDING = 64
#: After accept() fails for want of descriptors, the listening socket is
#: left alone this long: it stays readable, and retrying at once would spin.
ACCEPT_PAUSE = 0.1
#: At exit, how long the listener still waits for records that are half-sent.
SHUTDOWN_TIMEOUT = 2.0
_RECV_SIZE = 1 << 18
#: How much one round reads from one connection at most: more than a
#: sender's socket buffer holds (the channel asks for 1 MiB), so a round
#: reads at least all that was queued when it began, and a sender that never
#: pauses cannot keep the listener on its connection for ever.
_ROUND_LIMIT = 1 << 22


class _Connection:
    __slots__ = (
        "authenticated",
        "buffer",
        "challenge",
        "confirmed",
        "deadline",
        "decoder",
        "ended",
        "received",
        "sock",
    )

    def __init__(self, sock: socket.socket, challenge: bytes) -> None:
        self.sock = sock
        self.challenge = challenge
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.authenticated = False
        self.buffer = bytearray()
        self.decoder = _wire.Decoder()
        #: Records read from this connection, and how many of them the
        #: sender has been told are handled (see _wire.CONFIRM).
        self.received = 0
        self.confirmed = 0
        #: Read to its end: closed once what it carried is confirmed.
        self.ended = False


class Server:
    """The listening socket, its thread, and the routes records are dispatched to."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.key = os.urandom(32)
        with _endpoint.fd_lock:
            self._listening, self.address, self.directory = _endpoint.bind()
            self._wake_r, self._wake_w = os.pipe()
            _endpoint.child_closes.extend((self._listening.fileno(), self._wake_r, self._wake_w))
        #: How descendants reach this listener: ``(pid, key, socket address)``.
        self.endpoint = (self.pid, self.key, self.address)
        self._listening.listen(128)
        self._listening.setblocking(False)
        os.set_blocking(self._wake_r, False)
        # Never freed, in any process: a forked child closes its copies of
        # these descriptors by number (see _endpoint.child_closes), so no socket object
        # of this server may close them again when it is deallocated, by
        # which time the numbers may be the child's own files.
        _streams.abandon(self)
        # poll(), not epoll: no descriptor of its own for a forked child to close.
        self._selector = selectors.PollSelector()
        self._selector.register(self._listening, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._connections: Dict[int, _Connection] = {}
        self._requests: List[Callable[[], None]] = []
        self._stopping = False
        self.stats = {
            "records": 0,
            "connections": 0,
            "auth_failures": 0,
            "garbage": 0,
            "truncated": 0,
            "dispatch_errors": 0,
            "handshake_timeouts": 0,
            "handshakes_refused": 0,
            "accept_errors": 0,
            "order_waits_expired": 0,
        }
        self.router = _router.Router(self.stats)
        self._dispatch = self.router.dispatch
        #: Connections that have not answered the challenge yet, oldest first
        #: (a dict as an ordered set).
        self._pending: Dict[_Connection, None] = {}
        #: While accepting is paused (see ACCEPT_PAUSE): when it resumes.
        self._accept_resumes = 0.0
        #: Records read in this round, and those held over from the last.
        self._incoming: List[_Item] = []
        self._held: List[_Item] = []
        #: Connections read to their end, not closed yet (see _close_ended).
        self._ending: List[_Connection] = []
        #: Whether the top's own records wait for this listener's rounds.
        self.turns = _turns.Turns(self._catch_up, self.stats)
        self.thread = threading.Thread(
            target=self._run,
            name="forksafe_logging listener",
            daemon=True,
            **_compat.fresh_context(),
        )
        self.turns.listener = self.thread
        self.thread.start()
        _order.enable(self.turns)

    # -- the listener thread -------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if not self._stopping:
                # Died (a bug of ours): senders must not wait for it. With the
                # listening socket and every connection closed, a sender's
                # next write fails, its new connection is refused, and it
                # writes to its stderr from then on. What was sent before
                # that is handled first, if this thread still can.
                _router.warn("the listener thread stopped; processes of the tree write to stderr")
                _order.disable(self.turns)  # the top's records: no waiting for this thread
                try:
                    self._last_reads()
                except BaseException:
                    pass
                self._abandon_connections()

    def _abandon_connections(self) -> None:
        self.turns.never_wait()
        _endpoint.close_listed(self._listening)
        for conn in list(self._connections.values()):
            self._close(conn)
        self._held = []
        self._ending = []

    def _loop(self) -> None:
        while not self._stopping:
            try:
                # Held records go out in the next round: no waiting then.
                events = self._selector.select(0.0 if self._held else self._next_deadline())
                self.turns.busy = True
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
                self._serve_requests()

    def _last_reads(self) -> None:
        """Refuse what comes next, handle what has come, held-over records too."""
        _endpoint.close_listed(self._listening)
        connections = list(self._connections.values())
        for conn in connections:
            # After SHUT_RD a sender's write fails at once; what the kernel
            # already holds for us can still be read.
            try:
                conn.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            while self._read(conn):  # to its end
                pass
        # Nothing more can come: what was held over goes out too, and is
        # confirmed. Only then closed: a sender whose write failed waits
        # for the end of its connection, and shows on its stderr only what
        # was not confirmed by then (see _channel).
        self._release(float("inf"))
        for conn in connections:
            if conn.sock.fileno() >= 0:
                self._close(conn)
        self._ending = []

    def _round(self, events: List[Tuple[Any, int]], cutoff: float) -> bool:
        """Read every connection in ``events`` to its end, then dispatch in order.

        Returns whether a request from another thread is waiting.
        """
        wake = False
        for key, _ in events:
            try:
                if key.fileobj is self._listening:
                    self._accept()
                elif key.fileobj == self._wake_r:
                    wake = True
                else:
                    self._read(key.data)
            except BaseException as exc:
                # The thread must outlive any one connection's trouble:
                # if it died, every sender would wait for it forever.
                _router.warn("the listener hit an unexpected error: %r" % (exc,))
                if isinstance(key.data, _Connection):
                    self._close(key.data)
        # After the events: an answer that has arrived counts, however
        # long a handler kept this thread away.
        self._expire()
        self._release(cutoff)
        return wake

    def _release(self, cutoff: float) -> None:
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
        incoming = self._incoming
        held = self._held
        if not incoming and not held:
            if self._ending:
                self._close_ended(held)
            self.turns.round_ended(False)
            return
        self._incoming = []
        ready = held
        later: List[_Item] = []
        self._held = later
        for item in incoming:
            (ready if item[0] < cutoff else later).append(item)
        # Stable: records made at the same instant keep their arrival order.
        ready.sort(key=_made)
        for item in ready:
            self._dispatch(item[1], item[2])
        self._confirm(ready, later)
        if self._ending:
            self._close_ended(later)
        self.turns.round_ended(bool(later))

    @staticmethod
    def _confirm(ready: List[_Item], later: List[_Item]) -> None:
        """Tell the senders of ``ready`` how many of their records are handled.

        Counted up to the first record of the connection still held over:
        the sender learns a number, not a list. Sent without waiting: a
        sender that does not read its confirmations has a full buffer, and a
        confirmation that cannot go now is covered by the next one.
        """
        first_held: Dict[_Connection, int] = {}
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

    def _close_ended(self, held: List[_Item]) -> None:
        """Close the connections read to their end whose records are all handled."""
        waiting = {item[3] for item in held}
        ending: List[_Connection] = []
        for conn in self._ending:
            if conn in waiting:
                ending.append(conn)
            elif conn.sock.fileno() >= 0:
                self._close(conn)
        self._ending = ending

    def _next_deadline(self) -> Optional[float]:
        """Seconds until a pending handshake expires or accepting resumes; None: no limit."""
        deadlines = []
        if self._pending:
            deadlines.append(next(iter(self._pending)).deadline)
        if self._accept_resumes:
            deadlines.append(self._accept_resumes)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            oldest = next(iter(self._pending))
            if oldest.deadline > now:
                break
            self.stats["handshake_timeouts"] += 1
            self._close(oldest)
        if self._accept_resumes and now >= self._accept_resumes and not self._stopping:
            self._accept_resumes = 0.0
            self._selector.register(self._listening, selectors.EVENT_READ, None)

    def _accept(self) -> None:
        while True:
            with _endpoint.fd_lock:
                try:
                    sock, _ = self._listening.accept()
                except (BlockingIOError, InterruptedError):  # none left
                    return
                except OSError:
                    # Out of descriptors (EMFILE) or memory: the connection
                    # stays in the backlog, and the socket stays readable.
                    self.stats["accept_errors"] += 1
                    self._selector.unregister(self._listening)
                    self._accept_resumes = time.monotonic() + ACCEPT_PAUSE
                    return
                _endpoint.child_closes.append(sock.fileno())
            challenge = os.urandom(_endpoint.CHALLENGE_SIZE)
            try:
                sock.setblocking(False)
                sock.send(challenge)  # fits: a fresh socket's buffer is empty
            except OSError:
                _endpoint.close_listed(sock)
                continue
            conn = _Connection(sock, challenge)
            self._connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._pending[conn] = None
            if len(self._pending) > MAX_PENDING:
                self.stats["handshakes_refused"] += 1
                self._close(next(iter(self._pending)))
            self.stats["connections"] += 1

    def _close(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if conn.authenticated and fd >= 0:
            self.turns.unwatch(fd)
        self._connections.pop(fd, None)
        self._pending.pop(conn, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        _endpoint.close_listed(conn.sock)

    def _read(self, conn: _Connection) -> bool:
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
                    self.stats["truncated"] += 1
                    conn.buffer.clear()
                conn.ended = True
                self._ending.append(conn)
                try:
                    self._selector.unregister(conn.sock)  # else readable in every round
                except (KeyError, ValueError):
                    pass
                return False
            conn.buffer += data
            if not self._parse(conn):
                self._close(conn)
                return False
            # A short read emptied the queue as it was when it began.
            if len(data) < _RECV_SIZE:
                return False
            taken += len(data)
            if taken >= _ROUND_LIMIT:
                return True

    def _parse(self, conn: _Connection) -> bool:
        """Handle every whole frame in ``conn.buffer``; False to drop the connection."""
        buf = conn.buffer
        pos = 0
        if not conn.authenticated:
            # The sender's answer to our challenge, then its own challenge.
            if len(buf) < 2 * _endpoint.CHALLENGE_SIZE:
                return True
            response = bytes(buf[: _endpoint.CHALLENGE_SIZE])
            if not _endpoint.is_answer(self.key, conn.challenge, response):
                self.stats["auth_failures"] += 1
                return False
            theirs = bytes(buf[_endpoint.CHALLENGE_SIZE : 2 * _endpoint.CHALLENGE_SIZE])
            # Watched before the answer goes (see Turns.watch).
            conn.authenticated = True
            self.turns.watch(conn.sock.fileno())
            try:
                # Fits: nothing else is ever sent on this socket.
                conn.sock.send(_endpoint.listener_answer(self.key, theirs))
            except OSError:
                return False
            self._pending.pop(conn, None)
            pos = 2 * _endpoint.CHALLENGE_SIZE
        unpack = _wire.HEADER.unpack_from
        feed = conn.decoder.feed
        size = len(buf)
        view = memoryview(buf)
        try:
            while size - pos >= 4:
                (length,) = unpack(buf, pos)
                if length > _wire.MAX_FRAME or length == 0:
                    self.stats["garbage"] += 1
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
                except _wire.Garbage:
                    self.stats["garbage"] += 1
                    return False
                pos = end
                if decoded is not None:
                    route, record = decoded
                    conn.received += 1
                    self._incoming.append((_stamp(record), route, record, conn, conn.received))
        finally:
            view.release()
        if pos:
            del buf[:pos]
        return True

    @staticmethod
    def _send_levels(conn: _Connection) -> None:
        """Answer a sender that asks for this process's logger levels (see _wire.LEVELS)."""
        try:
            conn.sock.send(_wire.levels_message(*_reach.levels()))
        except OSError:
            pass  # fits: asked before any record, so nothing else is queued

    def _serve_requests(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        requests, self._requests = self._requests, []
        for request in requests:
            request()

    def _drain(self) -> None:
        """A round now: every record that reached the sockets before it is handled."""
        self.turns.busy = True
        cutoff = time.time()
        self._round(self._selector.select(0.0), cutoff)

    def _catch_up(self, timeout: float) -> bool:
        """A round for a record of the top (see _turns); False if none came in ``timeout``."""
        return not self._stopping and self._call(self._drain, timeout)

    # -- called from other threads -------------------------------------------

    def _call(self, request: Callable[[], None], timeout: Optional[float]) -> bool:
        if threading.current_thread() is self.thread:
            request()
            return True
        done = threading.Event()

        def run() -> None:
            try:
                request()
            finally:
                done.set()

        self._requests.append(run)
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            return False
        return done.wait(timeout)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Handle every record that has reached the listener's sockets."""
        if not self.thread.is_alive():
            return False
        if threading.current_thread() is self.thread:
            # A handler flushing from inside a dispatch: the connection being
            # parsed cannot be read into now, and it is being drained anyway.
            return True
        return self._call(self._drain, timeout)

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Handle what was sent, wait up to ``timeout`` for half-sent records, then close."""
        if self.pid != os.getpid() or not self.thread.is_alive():
            return
        # The top's records stop waiting their turn: at exit, logging's own
        # hooks flush after this one, and this thread is about to stop.
        _order.disable(self.turns)
        deadline = time.monotonic() + timeout

        def finish() -> None:
            if not self._accept_resumes:  # else not registered now
                self._selector.unregister(self._listening)
            self._drain()
            # Half-sent frames: their senders are mid-sendall. Wait a bounded time.
            while any(c.buffer for c in self._connections.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in self._selector.select(min(remaining, 0.05)):
                    if isinstance(key.data, _Connection):
                        while self._read(key.data):
                            pass
            # Senders may still be sending (forked children outlive the top).
            # What the kernel holds for us is handled; what comes after is
            # refused: a sender then gets EPIPE, and a new connection is
            # refused too, so it writes that record to its stderr. Nothing
            # is lost between the two without its sender knowing.
            self._last_reads()
            self._stopping = True

        self._call(finish, timeout + 5)
        self.thread.join(timeout + 5)
        self._release_resources()
        if self.directory is not None:
            try:
                os.unlink(self.address)
                os.rmdir(self.directory)
            except OSError:
                pass

    def _release_resources(self) -> None:
        with _endpoint.fd_lock:  # a child forked in between would keep them open
            for fd in (self._listening.fileno(), self._wake_r, self._wake_w, *self._connections):
                _endpoint.forget_descriptor(fd)
            self.turns.close()
            for conn in list(self._connections.values()):
                conn.sock.close()
            self._connections.clear()
            self._listening.close()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._selector.close()
        # This object is never freed (see __init__): let go of the program's
        # objects it holds, the handlers of the routes above all.
        self.router.forget()
        self._requests = []


_LEVELS_TAG = _wire.LEVELS[0]


def _made(item: _Item) -> float:
    return item[0]


def _stamp(record: logging.LogRecord) -> float:
    """When ``record`` was made; 0 if a record factory left something odd there."""
    created = record.created
    if created.__class__ is float:
        return created  # type: ignore[no-any-return]
    try:
        return float(created)
    except (TypeError, ValueError, OverflowError):
        return 0.0


_server: Optional[Server] = None
#: Guards starting and stopping the listener, and the at-fork hooks'
#: registration; re-initialized in a forked child (see _atfork).
lock = threading.Lock()

#: What must happen once a listener runs in this process: forks must be made
#: safe around it. ``_atfork`` adds the registration of its hooks when it is
#: imported, which the package's ``__init__`` does before any handler can
#: start a listener; a list here, because ``_atfork`` sits above the handlers
#: that start listeners.
on_start: List[Callable[[], None]] = []


def current() -> Optional[Server]:
    """The listener this process runs, if it is the top of a tree."""
    server = _server
    if server is not None and server.pid == os.getpid():
        return server
    return None


def ensure_started() -> Server:
    """The running listener of this process, started if needed."""
    global _server
    with lock:
        server = current()
        if server is None or not server.thread.is_alive():
            server = _server = Server()
            atexit.register(_stop_at_exit, server)
        return server


def stop(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Stop this process's listener, if it runs one."""
    global _server
    with lock:
        server = current()
        _server = None
    if server is not None:
        server.stop(timeout)


def _stop_at_exit(server: Server) -> None:
    # Registered after logging's own atexit hook, so it runs before it: the
    # records are handled first, then logging.shutdown() flushes and closes.
    server.stop(SHUTDOWN_TIMEOUT)
