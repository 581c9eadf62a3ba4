"""The multiprocess-safe pair: :class:`QueueHandler` sends, :class:`QueueListener` owns handlers.

Both are public so that :func:`logging.config.dictConfig` can name them::

    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "app.log"},
        "queue": {"class": "forksafe_logging.QueueHandler", "handlers": ["file"]},
    }

The top process (the one that created the first of them, or called
``install()``) runs the listener; every other process of the tree sends its
records there, over a connection of its own.
"""

from __future__ import annotations

import logging
import os
import sys

from forksafe_logging import (
    _channel,
    _compat,
    _peers,
    _server,
    _targets,
    _tree,
    _unconfirmed,
    _wire,
)
from forksafe_logging._state import state

_modules = sys.modules
_getpid = os.getpid

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Tuple, Union


class QueueHandler(logging.Handler):
    """Send records to the process tree's listener, from any process of the tree.

    In the top process it hands each record straight to its ``handlers``; in
    every other process (forked, spawned, forkserver, or a subprocess that
    called :func:`forksafe_logging.attach`) it sends the record, made plain,
    over the process's own connection to the listener, which hands it to the
    same handlers in the top process. When the call returns, the record is in
    the kernel's socket buffer: a process killed right after loses nothing.

    Args:
        handlers: The handlers that receive the records in the top process:
            handler objects, or names of handlers, either configured already
            or configured by the same :func:`logging.config.dictConfig` call
            that makes this handler (in any order, on every Python version).
        timeout: ``None`` (the default): when the listener falls behind, a
            logging call waits. A number of seconds: it gives up after that
            long, and the record is counted in :attr:`dropped`.
        respect_handler_level: Skip a target handler whose level is above
            the record's, as ``Logger.callHandlers`` does.
        level: This handler's own level.

    If the listener cannot be reached (the top process died), records are
    written to ``sys.stderr`` instead, after a single warning; nothing waits.
    So are the records sent before that the listener had not confirmed it
    handled (see :ref:`how confirmations work <confirmations>`).

    Records sent from a child are routed by this handler's :attr:`name`
    (which ``dictConfig`` sets). Give handlers built in code a name if
    spawned children build them too.

    .. versionadded:: 0.2.0
    .. versionchanged:: 0.4.0
       Records the listener never confirmed go to ``sys.stderr`` should it die.
       ``dictConfig`` raises ``ValueError`` for one that names a handler the
       configuration does not define, names itself or reaches itself through
       other ``QueueHandler`` objects, or, in the process that runs the
       listener, names no handler.
    """

    #: Records given up on after ``timeout`` seconds, in this process.
    dropped: int
    _targets: List[logging.Handler]
    #: Names to look up in the dictConfig that is building this handler, once
    #: it has built them (it builds handlers in name order).
    _pending: Optional[Tuple[List[Union[str, logging.Handler]], Any]]

    def __init__(
        self,
        handlers: Sequence[Union[str, logging.Handler]] = (),
        *,
        timeout: Optional[float] = None,
        respect_handler_level: bool = True,
        level: Union[int, str] = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        specs = _targets.check_specs(handlers)
        self._setup(timeout, respect_handler_level)
        descendant = _tree.is_descendant()
        running = _compat.running_dict_config()
        if running is not None:
            # Checked now, not on the first record: a mistake found there
            # reaches whichever logging call comes first, or every one.
            _targets.check_dict_config(
                specs, running[0], running[1], sends=descendant, inner=_inner
            )
        targets = _targets.configured(specs, required=running is None)
        if targets is not None:
            self._targets = targets
        elif running is not None:  # names this dictConfig has not made yet
            self._pending = (specs, running[0])
        if not descendant:
            server = _tree.start_listener()
            server.router.route_owners.add(self)

    def _setup(self, timeout: Optional[float], respect_handler_level: bool) -> None:
        self._targets = []
        self._pending = None
        self.timeout = _targets.check_timeout(timeout)
        self.respect_handler_level = respect_handler_level
        self.dropped = 0
        #: Sends to the top's logger tree rather than to handlers of its own.
        self._tree = False

    @property
    def route(self) -> str:
        """The handler's name, under which a child's records travel to the listener."""
        return self.name or "handler-%x" % id(self)

    def _resolve(self) -> List[logging.Handler]:
        pending = self._pending
        if pending is not None:
            self._targets = _targets.resolve(pending[0], pending[1], self.route)
            self._pending = None  # let the rest of that configuration go
        return self._targets

    def dispatch(self, record: logging.LogRecord) -> None:
        """Hand ``record`` to the target handlers (in the top process)."""
        for handler in self._resolve():
            if not self.respect_handler_level or record.levelno >= handler.level:
                handler.handle(record)

    def handle(self, record: logging.LogRecord) -> Any:
        # No handler lock: the channel keeps frames whole, and the targets
        # take their own locks.
        rv = self.filter(record)
        if rv:
            if isinstance(rv, logging.LogRecord):  # 3.12+: a filter may return a record
                record = rv
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """Send ``record`` to the listener (or, in the top process, to the handlers)."""
        try:
            # The attribute first, which saves a call per record once it is
            # set (a forked child of the top sets it on its first record).
            # One getpid() for both checks (a system call each).
            pid = _getpid()
            if (state.where or _tree.tree()) is None or _server.current(pid) is not None:
                # The top of the tree (with its listener running, or stopped
                # by uninstall()): the handlers are here.
                if not self._tree:
                    self.dispatch(record)
                return
            if not self._tree:
                route = self.route
            elif _modules.get("sentry_sdk") is not None and _peers.seen_by_sentry():
                route = _peers.mark_seen_by_sentry()  # the top's Sentry must not report it again
            else:
                route = ""
            key = _wire.static_key(route, record)
            ch = _channel.channel(pid)
            try:
                if not ch.send(key, record, self.timeout, self.format):
                    self.dropped += 1
            except _channel.ListenerGone as exc:
                _channel.warn_once(ch, str(exc), _unconfirmed.stderr_write)
                _unconfirmed.stderr_write(self.format(record) + "\n")
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _inner(handler: Any) -> Optional[Tuple[Sequence[Union[str, logging.Handler]], Any]]:
    """What a QueueHandler names, and where (see :func:`_targets.check_dict_config`)."""
    if not isinstance(handler, QueueHandler):
        return None
    if handler._pending is not None:
        return handler._pending
    return handler._targets, None


def tree_forwarder() -> QueueHandler:
    """A handler that sends records to be dispatched through the top's logger tree.

    Made without ``__init__``, which would start a listener in a process
    that has none: this one only ever sends.
    """
    handler = QueueHandler.__new__(QueueHandler)
    logging.Handler.__init__(handler)
    handler._setup(None, True)
    handler._tree = True
    # Used only when the listener is gone and records go to stderr instead.
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    return handler


class QueueListener:
    """The process tree's listener: one thread in the top process that owns the real handlers.

    It is started by :func:`forksafe_logging.install` or by the first
    :class:`QueueHandler` made in the top process; constructing one returns a
    view of the running listener, starting it if needed. Records from a child
    reach it over the child's own authenticated connection to a Unix socket
    (an abstract one on Linux, which leaves no file behind); bytes it reads
    are parsed as JSON, never unpickled.

    .. versionadded:: 0.2.0
    .. versionchanged:: 0.4.0
       On Linux the socket is in the abstract namespace, not in a directory.
    """

    def __init__(self) -> None:
        if _tree.is_descendant():
            raise RuntimeError(
                "this process is a child of a process tree whose top runs the listener; "
                "records logged here are sent there already"
            )
        self._server = _tree.start_listener()

    @property
    def address(self) -> str:
        """The listener's Unix socket address.

        On Linux, a name in the abstract namespace: a string that starts
        with a NUL byte (``"\\0forksafe-logging-..."``). Elsewhere, the path
        of a socket file.
        """
        return self._server.address

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Handle every record that has reached the listener; False on timeout.

        Records a child has sent before this call are handled when it
        returns ``True``: call it before reading what the handlers wrote.
        """
        return self._server.flush(timeout)

    def stop(self, timeout: float = _server.SHUTDOWN_TIMEOUT) -> None:
        """Handle what was sent, wait up to ``timeout`` s for half-sent records, stop."""
        _server.stop(timeout)
        _tree.unpublish()

    def stats(self) -> Dict[str, int]:
        """The listener's counters since it started.

        ``records`` handled; ``connections`` accepted; ``auth_failures``
        (a hello whose MAC is wrong); ``handshake_timeouts`` (no whole hello
        within 5 s); ``handshakes_refused`` (closed unanswered because 64
        others were waiting); ``accept_errors`` (``accept()`` failed for
        want of descriptors: accepting pauses 0.1 s); ``garbage`` (a frame
        it could not parse: the connection is closed); ``truncated`` (a
        sender gone or interrupted mid-frame); ``dispatch_errors`` (a
        handler raised); ``order_waits_expired`` (a record of this process
        stopped waiting, after 1 s, for the listener to handle what other
        processes had sent before it: a handler is stuck); ``fast_records``
        (of ``records``, those whose lines their sender formatted: see
        :ref:`the fast path <fast-path>`); ``plans_withdrawn`` (fast-path
        plans found out of date by a change of the configuration); ``rings``
        (connections given a ring to write their records to: see
        :ref:`the ring <ring>`).

        .. versionchanged:: 0.4.0
           ``handshake_timeouts``, ``handshakes_refused``, ``accept_errors``,
           ``order_waits_expired``, ``fast_records``, ``plans_withdrawn``,
           ``rings``.
        """
        return dict(self._server.stats)


def flush(timeout: Optional[float] = None) -> bool:
    """Handle every record that has reached this process's listener, if it runs one.

    Returns ``False`` if ``timeout`` passed first; ``True`` also when this
    process runs no listener (there is nothing to wait for).

    .. versionadded:: 0.2.0
    """
    server = _server.current()
    if server is None:
        return True
    return server.flush(timeout)
