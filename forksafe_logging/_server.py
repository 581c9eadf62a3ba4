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
import os
import selectors
import socket
import threading
import time

from forksafe_logging import _compat, _endpoint, _inbox, _order, _router, _streams, _turns, _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from forksafe_logging._inbox import Connection, Item

#: At exit, how long the listener still waits for records that are half-sent.
SHUTDOWN_TIMEOUT = 2.0


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
        #: Records held over from the last round (see _release).
        self._held: List[Item] = []
        #: Whether the top's own records wait for this listener's rounds.
        self.turns = _turns.Turns(self._catch_up, self.stats)
        self._inbox = _inbox.Inbox(
            self._listening, self._selector, self.key, self.stats, self.turns
        )
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
        for conn in list(self._inbox.connections.values()):
            self._inbox.close(conn)
        self._held = []
        self._inbox.ending = []

    def _loop(self) -> None:
        while not self._stopping:
            try:
                # Held records go out in the next round: no waiting then.
                events = self._selector.select(0.0 if self._held else self._inbox.next_deadline())
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
        connections = list(self._inbox.connections.values())
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
        self._release(float("inf"))
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
                    self._inbox.accept()
                elif key.fileobj == self._wake_r:
                    wake = True
                else:
                    self._inbox.read(key.data)
            except BaseException as exc:
                # The thread must outlive any one connection's trouble:
                # if it died, every sender would wait for it forever.
                _router.warn("the listener hit an unexpected error: %r" % (exc,))
                if isinstance(key.data, _inbox.Connection):
                    self._inbox.close(key.data)
        # After the events: an answer that has arrived counts, however
        # long a handler kept this thread away.
        self._inbox.expire()
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
        incoming = self._inbox.incoming
        held = self._held
        if not incoming and not held:
            if self._inbox.ending:
                self._close_ended(held)
            self.turns.round_ended(False)
            return
        self._inbox.incoming = []
        ready = held
        later: List[Item] = []
        self._held = later
        for item in incoming:
            (ready if item[0] < cutoff else later).append(item)
        # Stable: records made at the same instant keep their arrival order.
        ready.sort(key=_made)
        for item in ready:
            self._dispatch(item[1], item[2])
        self._confirm(ready, later)
        if self._inbox.ending:
            self._close_ended(later)
        self.turns.round_ended(bool(later))

    @staticmethod
    def _confirm(ready: List[Item], later: List[Item]) -> None:
        """Tell the senders of ``ready`` how many of their records are handled.

        Counted up to the first record of the connection still held over:
        the sender learns a number, not a list. Sent without waiting: a
        sender that does not read its confirmations has a full buffer, and a
        confirmation that cannot go now is covered by the next one.
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
            self._inbox.stop_accepting()
            self._drain()
            # Half-sent frames: their senders are mid-sendall. Wait a bounded time.
            while any(c.buffer for c in self._inbox.connections.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in self._selector.select(min(remaining, 0.05)):
                    if isinstance(key.data, _inbox.Connection):
                        while self._inbox.read(key.data):
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
            for fd in (
                self._listening.fileno(),
                self._wake_r,
                self._wake_w,
                *self._inbox.connections,
            ):
                _endpoint.forget_descriptor(fd)
            self.turns.close()
            for conn in list(self._inbox.connections.values()):
                conn.sock.close()
            self._inbox.connections.clear()
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


def _made(item: Item) -> float:
    return item[0]


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
