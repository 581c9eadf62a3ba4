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
from typing import Any, Dict, List, Optional, Sequence, Union

from forksafe_logging import _atfork, _channel, _server, _wire


def _is_descendant() -> bool:
    """Whether a listener of an ancestor process is reachable from here."""
    if _server.current() is not None:
        return False
    where = _channel.endpoint()
    return where is not None and where[0] != os.getpid()


def _check_timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be a number of seconds or None; got %r" % (timeout,))
    if not timeout > 0 or timeout == float("inf"):
        raise ValueError(
            "timeout must be a finite number of seconds > 0, or None; got %r" % (timeout,)
        )
    return float(timeout)


class QueueHandler(logging.Handler):
    """Send records to the process tree's listener, from any process of the tree.

    In the top process it hands each record straight to its ``handlers``; in
    every other process (forked, spawned, forkserver, or a subprocess that
    called :func:`forksafe_logging.install`) it sends the record, made plain,
    over the process's own connection to the listener, which hands it to the
    same handlers in the top process. When the call returns, the record is in
    the kernel's socket buffer: a process killed right after loses nothing.

    Args:
        handlers: The handlers that receive the records in the top process:
            handler objects, or the names of handlers configured by
            :func:`logging.config.dictConfig` in the same dictionary (looked
            up when the first record arrives, so their order in the dict does
            not matter).
        timeout: ``None`` (the default): when the listener falls behind, a
            logging call waits. A number of seconds: it gives up after that
            long, and the record is counted in :attr:`dropped`.
        respect_handler_level: Skip a target handler whose level is above
            the record's, as ``Logger.callHandlers`` does.
        level: This handler's own level.

    If the listener cannot be reached (the top process died), records are
    written to ``sys.stderr`` instead, after a single warning; nothing waits.

    Records sent from a child are routed by this handler's :attr:`name`
    (which ``dictConfig`` sets). Give handlers built in code a name if
    spawned children build them too.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        handlers: Sequence[Union[str, logging.Handler]] = (),
        *,
        timeout: Optional[float] = None,
        respect_handler_level: bool = True,
        level: Union[int, str] = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if isinstance(handlers, (str, logging.Handler)):
            handlers = [handlers]
        for target in handlers:
            if not isinstance(target, (str, logging.Handler)):
                raise TypeError(
                    "handlers must be logging.Handler objects or names of configured "
                    "handlers; got %r" % (target,)
                )
        self._spec: List[Union[str, logging.Handler]] = list(handlers)
        self._targets: Optional[List[logging.Handler]] = None
        self.timeout = _check_timeout(timeout)
        self.respect_handler_level = respect_handler_level
        #: Records given up on after ``timeout`` seconds, in this process.
        self.dropped = 0
        self._tree = False
        if not _is_descendant():
            server = _start_listener()
            server.route_owners.add(self)

    @property
    def route(self) -> str:
        """The key a child's records travel under: the handler's name."""
        return self.name or "handler-%x" % id(self)

    def _resolve(self) -> List[logging.Handler]:
        targets = self._targets
        if targets is None:
            targets = []
            for spec in self._spec:
                if isinstance(spec, str):
                    found = logging._handlers.get(spec)  # type: ignore[attr-defined]
                    if found is None:
                        raise ValueError(
                            "QueueHandler %r: no handler named %r is configured"
                            % (self.route, spec)
                        )
                    targets.append(found)
                else:
                    targets.append(spec)
            self._targets = targets
        return targets

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
            if _server.current() is not None:
                if not self._tree:
                    self.dispatch(record)
                return
            key = _wire.static_key("" if self._tree else self.route, record)
            msg = _wire.message(record)
            ch = _channel.channel()
            try:
                if not ch.send(key, lambda n: _wire.record_frame(n, msg, record), self.timeout):
                    self.dropped += 1
            except _channel.ListenerGone as exc:
                _channel.warn_once(ch, str(exc), _channel.stderr_write)
                _channel.stderr_write(self.format(record) + "\n")
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def tree_forwarder() -> QueueHandler:
    """A handler that sends records to be dispatched through the top's logger tree."""
    handler = QueueHandler.__new__(QueueHandler)
    logging.Handler.__init__(handler)
    handler._spec = []
    handler._targets = []
    handler.timeout = None
    handler.respect_handler_level = True
    handler.dropped = 0
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
    in a directory only this user can read; bytes it reads are parsed as
    JSON, never unpickled.

    .. versionadded:: 0.2.0
    """

    def __init__(self) -> None:
        if _is_descendant():
            raise RuntimeError(
                "this process is a child of a process tree whose top runs the listener; "
                "records logged here are sent there already"
            )
        self._server = _start_listener()

    @property
    def address(self) -> str:
        """The path of the listener's Unix socket."""
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
        _channel.unpublish()

    def stats(self) -> Dict[str, int]:
        """Counters: records, connections, auth_failures, garbage, truncated, dispatch_errors."""
        return dict(self._server.stats)


def _start_listener() -> _server.Server:
    server = _server.ensure_started()
    _channel.publish(server)
    _atfork.register()
    return server


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
