"""Where a record read from a child goes in the top: the router of the tree's listener.

A record comes with a route: ``""`` for the top's logger tree, or the name
of a :class:`~forksafe_logging.QueueHandler` whose handlers it targets
(:data:`forksafe_logging._peers.SEEN_BY_SENTRY` marks one that the
sender's Sentry has reported). The router finds the logger or handlers,
applies this process's levels, and survives whatever a handler raises.
Called only from the listener's thread.
"""

from __future__ import annotations

import logging
import sys
import traceback
import weakref

from forksafe_logging import _peers

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Set


class Router:
    """Dispatches the records a listener reads, counting them in its ``stats``."""

    def __init__(self, stats: Dict[str, int]) -> None:
        self.stats = stats
        #: The loggers records were dispatched to, by name.
        self._loggers: Dict[str, logging.Logger] = {}
        #: The kinds of dispatch errors already reported.
        self._reported: Set[type] = set()
        #: Handlers (forksafe QueueHandlers) that receive records sent on their route.
        self.route_owners: weakref.WeakSet[Any] = weakref.WeakSet()
        self._routes: Dict[str, Callable[[logging.LogRecord], None]] = {}

    def dispatch(self, route: str, record: logging.LogRecord) -> None:
        """Hand ``record``, sent on ``route``, to the handlers it was sent to."""
        self.stats["records"] += 1
        try:
            seen = route == _peers.SEEN_BY_SENTRY
            if route and not seen:
                target = self._routes.get(route)
                if target is None:
                    target = self._find_route(route)
                if target is not None:
                    target(record)
                    return
            # The caller's level check happened in the child with the child's
            # copy of the levels; this one applies the levels configured here.
            logger = self._existing_logger(record.name)
            if logger is not None:
                if logger.isEnabledFor(record.levelno):
                    if seen:
                        _peers.handle(logger, record)
                    else:
                        logger.handle(record)
            else:
                # A logger the child made and this process has not: handled
                # as that new logger would handle it (level NOTSET, no
                # handlers or filters of its own, propagating), without
                # making it. Made, it would stay for the life of the process,
                # one per name any child ever used.
                parent = _nearest_logger(record.name)
                levelno = record.levelno
                if logging.Logger.manager.disable < levelno >= parent.getEffectiveLevel():
                    if seen:
                        _peers.call_handlers(parent, record)
                    else:
                        parent.callHandlers(record)
        except BaseException as exc:
            # SystemExit from a handler, asyncio.CancelledError...: in this
            # thread they would end it, and the tree's senders would wait.
            self.stats["dispatch_errors"] += 1
            self._report(exc)

    def _existing_logger(self, name: str) -> Optional[logging.Logger]:
        """The logger ``name`` if this process has it; None if it would have to be made."""
        logger = self._loggers.get(name)
        if logger is not None:
            return logger
        manager = logging.Logger.manager
        found = manager.loggerDict.get(name)
        if isinstance(found, logging.Logger):
            logger = found
        elif name == logging.root.name:
            logger = logging.root
        elif (manager.loggerClass or logging.getLoggerClass()) is not logging.Logger:
            # A class of the program's may handle records its own way: made,
            # as logging would make it.
            logger = logging.getLogger(name)
        else:
            return None
        self._loggers[name] = logger
        return logger

    def _report(self, exc: BaseException) -> None:
        """Like ``Handler.handleError``: the traceback on stderr, once per kind of error."""
        kind = type(exc)
        if kind in self._reported:
            return
        self._reported.add(kind)
        try:
            text = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
        except Exception:
            text = repr(exc)
        warn(
            "a record from another process could not be handled (later errors of this kind "
            "are only counted, in QueueListener.stats()['dispatch_errors']):\n" + text.rstrip()
        )

    def _find_route(self, route: str) -> Optional[Callable[[logging.LogRecord], None]]:
        for owner in list(self.route_owners):
            if owner.route == route:
                self._routes[route] = owner.dispatch
                return owner.dispatch  # type: ignore[no-any-return]
        return None

    def forget(self) -> None:
        """Let go of the program's objects (loggers, the handlers of routes)."""
        self._routes.clear()
        self._loggers.clear()


def _nearest_logger(name: str) -> logging.Logger:
    """The logger that would be the parent of a new logger ``name`` (as ``_fixupParents``)."""
    loggers = logging.Logger.manager.loggerDict
    end = name.rfind(".")
    while end > 0:
        found = loggers.get(name[:end])
        if isinstance(found, logging.Logger):
            return found
        end = name.rfind(".", 0, end)
    return logging.root


def warn(message: str) -> None:
    """Say ``message`` on stderr, as the library's own; never raises."""
    try:
        sys.stderr.write("forksafe_logging: %s\n" % message)
    except Exception:
        pass
