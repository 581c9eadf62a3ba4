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
from collections.abc import Iterable

from forksafe_logging import _channel, _compat, _peers, _server, _tree, _unconfirmed, _wire

_modules = sys.modules

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union


def _is_descendant() -> bool:
    """Whether this process belongs to a tree whose listener runs in an ancestor."""
    if _server.current() is not None:
        return False
    if _tree.tree() is None:
        where = _tree.from_environment()
        if (
            where is not None
            and where[0] != os.getpid()
            and (
                # A spawn or forkserver child importing its parent's main
                # module: the object that will attach it is not unpickled yet.
                _compat.being_spawned_by_multiprocessing()
                # A child multiprocessing started for the top, which has a
                # listener without install() (a QueueHandler of its dictConfig
                # started it): uvicorn's workers configure logging again
                # with the same dictConfig.
                or _compat.multiprocessing_parent_pid() == where[0]
            )
        ):
            _tree.join(where)
    return _tree.tree() is not None


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
        if isinstance(handlers, (str, logging.Handler)) or not isinstance(handlers, Iterable):
            specs: List[Any] = [handlers]  # a bad single value is reported below
        else:
            specs = list(handlers)
        for target in specs:
            if not isinstance(target, (str, logging.Handler)):
                raise TypeError(
                    "handlers must be logging.Handler objects or names of configured "
                    "handlers; got %r" % (target,)
                )
        self._setup(timeout, respect_handler_level)
        descendant = _is_descendant()
        running = _compat.running_dict_config()
        if running is not None:
            # Checked now, not on the first record: a mistake found there
            # reaches whichever logging call comes first, or every one.
            _check_dict_config(specs, running[0], running[1], sends=descendant)
        found = [
            t if isinstance(t, logging.Handler) else logging._handlers.get(t)  # type: ignore[attr-defined]
            for t in specs
        ]
        if None in found:
            if running is None:
                missing = [t for t, h in zip(specs, found) if h is None]
                raise ValueError(
                    "QueueHandler: no handler named %s is configured"
                    % ", ".join(repr(name) for name in missing)
                )
            self._pending = (specs, running[0])
        else:
            self._targets = [h for h in found if h is not None]
        if not descendant:
            server = _start_listener()
            server.router.route_owners.add(self)

    def _setup(self, timeout: Optional[float], respect_handler_level: bool) -> None:
        self._targets = []
        self._pending = None
        self.timeout = _check_timeout(timeout)
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
            specs, configured = pending
            targets = []
            for spec in specs:
                found = spec if isinstance(spec, logging.Handler) else configured.get(spec)
                if not isinstance(found, logging.Handler):
                    raise ValueError(
                        "QueueHandler %r: the dictConfig that made it configured no handler "
                        "named %r" % (self.route, spec)
                    )
                targets.append(found)
            self._targets = targets
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
            if (_tree._where or _tree.tree()) is None or _server.current() is not None:
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
            msg = _wire.message(record)
            ch = _channel.channel()
            try:
                frame = lambda n: _wire.record_frame(n, msg, record)  # noqa: E731
                if not ch.send(key, frame, self.timeout, self.format):
                    self.dropped += 1
            except _channel.ListenerGone as exc:
                _channel.warn_once(ch, str(exc), _unconfirmed.stderr_write)
                _unconfirmed.stderr_write(self.format(record) + "\n")
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _check_dict_config(
    specs: Sequence[Union[str, logging.Handler]],
    handlers: Any,
    name: Optional[str],
    *,
    sends: bool,
) -> None:
    """Refuse, while ``dictConfig`` makes the handler, a configuration that cannot work.

    ``handlers`` is the running configuration's mapping of handlers, ``name``
    the handler's own name in it, and ``sends`` whether the handler sends to
    a listener in another process (rather than handing records to targets
    here).
    """
    label = "QueueHandler" if name is None else "QueueHandler %r" % name
    if not specs and not sends:
        # In a child, the handler sends under its name to the top's handler
        # of that name, which has the targets: none of its own is fine there.
        raise ValueError(
            '%s: "handlers" is missing or empty, so records given to it would go nowhere '
            "in this process, which runs the listener; name the handlers that should get "
            'them, as in "handlers": ["file"]' % label
        )
    for spec in specs:
        # Only this dictConfig's own: it removed every handler configured before.
        if isinstance(spec, str) and spec not in handlers:
            raise ValueError(
                "%s: no handler named %r in this dictConfig; it configures %s"
                % (label, spec, ", ".join(repr(n) for n in sorted(handlers)) or "none")
            )
    if name is None:
        return
    if name in (spec for spec in specs if isinstance(spec, str)):
        raise ValueError(
            "%s names itself in its handlers: each record would be handed to it again, "
            "forever" % label
        )
    cycle = _way_back(name, specs, handlers, handlers, path=[name], seen=set())
    if cycle is not None:
        raise ValueError(
            "%s: its records would come back to it (%s), forever; a QueueHandler must "
            "not reach itself through the QueueHandlers it names"
            % (label, " -> ".join(repr(n) for n in cycle))
        )


def _way_back(
    name: str,
    specs: Sequence[Union[str, logging.Handler]],
    mapping: Any,
    handlers: Any,
    *,
    path: List[str],
    seen: Set[int],
) -> Optional[List[str]]:
    """The QueueHandlers through which ``specs`` lead back to the one being made as ``name``.

    Names in ``specs`` are looked up in ``mapping``, the configuration of
    the QueueHandler that holds them. Of a cycle, only its member made last
    can see it, the others being made already (dictConfig makes them in name
    order and never defers ours); the one being made is still its
    configuration in ``handlers``, hence the comparison by name.
    """
    for spec in specs:
        if isinstance(spec, str):
            if spec == name and mapping is handlers:
                return [*path, spec]
            target = dict.get(mapping, spec)  # dict's get: no conversion of a config
            label = spec
        else:
            target = spec
            label = spec.name or repr(spec)
        if not isinstance(target, QueueHandler) or id(target) in seen:
            continue
        seen.add(id(target))
        inner: Sequence[Union[str, logging.Handler]]
        if target._pending is not None:
            inner, inner_mapping = target._pending
        else:
            inner, inner_mapping = target._targets, mapping
        found = _way_back(name, inner, inner_mapping, handlers, path=[*path, label], seen=seen)
        if found is not None:
            return found
    return None


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
        if _is_descendant():
            raise RuntimeError(
                "this process is a child of a process tree whose top runs the listener; "
                "records logged here are sent there already"
            )
        self._server = _start_listener()

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
        (wrong answer to the challenge); ``handshake_timeouts`` (no answer
        within 5 s); ``handshakes_refused`` (closed unanswered because 64
        others were waiting); ``accept_errors`` (``accept()`` failed for
        want of descriptors: accepting pauses 0.1 s); ``garbage`` (a frame
        it could not parse: the connection is closed); ``truncated`` (a
        sender gone or interrupted mid-frame); ``dispatch_errors`` (a
        handler raised); ``order_waits_expired`` (a record of this process
        stopped waiting, after 1 s, for the listener to handle what other
        processes had sent before it: a handler is stuck).

        .. versionchanged:: 0.4.0
           ``handshake_timeouts``, ``handshakes_refused``, ``accept_errors``,
           ``order_waits_expired``.
        """
        return dict(self._server.stats)


def _start_listener() -> _server.Server:
    server = _server.ensure_started()
    _tree.publish(server.endpoint)
    for hook in _server.on_start:  # the fork hooks' registration (see there)
        hook()
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
