"""The process tree's listener: one thread in the top process that reads every channel.

Each process of the tree opens its own connection to a Unix socket (its
address and the handshake are :mod:`forksafe_logging._endpoint`'s). A
connection must first send a random nonce with its MAC keyed with the tree's
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
import threading
import time

from forksafe_logging import (
    _compat,
    _door,
    _endpoint,
    _fork_warning,
    _inbox,
    _loop,
    _order,
    _plans,
    _requests,
    _rounds,
    _router,
    _settings,
    _streams,
    _turns,
)
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Callable, List, Optional


#: At exit, how long the listener still waits for records that are half-sent.
SHUTDOWN_TIMEOUT = 2.0


class Server:
    """The listening socket, its thread, and the routes records are dispatched to."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.key = os.urandom(32)
        with state.fd_lock:
            self._listening, self.address, self.directory = _endpoint.bind()
            wake_r, wake_w = os.pipe()
            state.child_closes.extend((self._listening.fileno(), wake_r, wake_w))
        #: Work other threads ask of the listener's (flush(), stop()).
        self._requests = _requests.Requests(wake_r, wake_w)
        #: How descendants reach this listener: ``(pid, key, socket address)``.
        self.endpoint = (self.pid, self.key, self.address)
        self._listening.listen(128)
        self._listening.setblocking(False)
        # Never freed, in any process: a forked child closes its copies of
        # these descriptors by number (see state.child_closes), so no socket object
        # of this server may close them again when it is deallocated, by
        # which time the numbers may be the child's own files.
        _streams.abandon(self)
        # poll(), not epoll: no descriptor of its own for a forked child to close.
        self._selector = selectors.PollSelector()
        self._selector.register(self._listening, selectors.EVENT_READ, None)
        self._selector.register(wake_r, selectors.EVENT_READ, None)
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
            "fast_records": 0,
            "plans_withdrawn": 0,
            "rings": 0,
        }
        self.router = _router.Router(self.stats)
        #: Whether the top's own records wait for this listener's rounds.
        self.turns = _turns.Turns(self._catch_up, self.stats)
        self._inbox = _inbox.Inbox(self._selector, self.key, self.stats, self.turns)
        self._door = _door.Door(self._listening, self._selector, self._inbox, self.stats)
        #: The fast path's plans (see _plans).
        self.plans = _plans.Plans(self.stats, self.router.dispatch)
        self.plans.enabled = _settings.fast_path()
        rounds = _rounds.Rounds(self._inbox, self.router.dispatch, self.turns, self.plans)
        self._loop = _loop.Loop(
            listening=self._listening,
            selector=self._selector,
            door=self._door,
            inbox=self._inbox,
            rounds=rounds,
            turns=self.turns,
            requests=self._requests,
        )
        self.thread = threading.Thread(
            target=self._loop.run,
            name="forksafe_logging listener",
            daemon=True,
            **_compat.fresh_context(),
        )
        self.turns.listener = self._requests.thread = self.thread
        self.thread.start()
        _order.enable(self.turns)

    def _catch_up(self, timeout: float) -> bool:
        """A round for a record of the top (see _turns); False if none came in ``timeout``."""
        return not self._loop.stopping and self._requests.call(self._loop.drain, timeout)

    # -- called from other threads -------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Handle every record that has reached the listener's sockets."""
        if not self.thread.is_alive():
            return False
        if threading.current_thread() is self.thread:
            # A handler flushing from inside a dispatch: the connection being
            # parsed cannot be read into now, and it is being drained anyway.
            return True
        return self._requests.call(self._loop.drain, timeout)

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Handle what was sent, wait up to ``timeout`` for half-sent records, then close."""
        if self.pid != os.getpid() or not self.thread.is_alive():
            return
        # The top's records stop waiting their turn: at exit, logging's own
        # hooks flush after this one, and this thread is about to stop.
        _order.disable(self.turns)
        deadline = time.monotonic() + timeout

        self._requests.call(lambda: self._loop.finish(deadline), timeout + 5)
        self.thread.join(timeout + 5)
        self._release_resources()
        if self.directory is not None:
            try:
                os.unlink(self.address)
                os.rmdir(self.directory)
            except OSError:
                pass

    def _release_resources(self) -> None:
        with state.fd_lock:  # a child forked in between would keep them open
            for fd in (
                self._listening.fileno(),
                self._requests.wake_r,
                self._requests.wake_w,
                *self._inbox.connections,
            ):
                _endpoint.forget_descriptor(fd)
            self.turns.close()
            for conn in list(self._inbox.connections.values()):
                conn.sock.close()
            self._inbox.connections.clear()
            self._listening.close()
            for fd in (self._requests.wake_r, self._requests.wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._selector.close()
        # This object is never freed (see __init__): let go of the program's
        # objects it holds, the handlers of the routes above all.
        self.router.forget()
        self._requests.forget()


#: What must happen once a listener runs in this process: forks must be made
#: safe around it. ``_atfork`` adds the registration of its hooks when it is
#: imported, which the package's ``__init__`` does before any handler can
#: start a listener; a list here, because ``_atfork`` sits above the handlers
#: that start listeners.
on_start: List[Callable[[], None]] = []


def current(pid: Optional[int] = None) -> Optional[Server]:
    """The listener this process runs, if it is the top of a tree (``pid``: this process's)."""
    server = state.server
    if server is not None and server.pid == (pid or os.getpid()):
        return server
    return None


def ensure_started() -> Server:
    """The running listener of this process, started if needed."""
    with state.server_lock:
        server = current()
        if server is None or not server.thread.is_alive():
            server = state.server = Server()
            atexit.register(_stop_at_exit, server)
        return server


def stop(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Stop this process's listener, if it runs one."""
    with state.server_lock:
        server = current()
        state.server = None
    if server is not None:
        server.stop(timeout)
    # Its filter for the fork warning has nothing left to match.
    _fork_warning.forget()


def _stop_at_exit(server: Server) -> None:
    # Registered after logging's own atexit hook, so it runs before it: the
    # records are handled first, then logging.shutdown() flushes and closes.
    server.stop(SHUTDOWN_TIMEOUT)
