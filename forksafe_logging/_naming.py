"""How the reports name what the logging configuration reaches: handlers, queues, locks, threads.

Shared by the fork-hazard report (:mod:`forksafe_logging._doctor`) and the
held-lock warning (:mod:`forksafe_logging._held`), so that both name a thing
the same way, and where the configuration refers to it.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import threading
from typing import Any, Dict, List, Optional, Set

from forksafe_logging import _reach


def class_name(cls: type) -> str:
    """A handler's class, with its module unless it is one of logging's."""
    if cls.__module__ in ("logging", "logging.handlers"):
        return cls.__qualname__
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def queue_name(q: object) -> str:
    if isinstance(q, queue.SimpleQueue):  # its class lives in _queue
        return "queue.SimpleQueue"
    return "%s.%s" % (type(q).__module__, type(q).__qualname__)


_LOCK_NAMES = {type(threading.Lock()): "threading.Lock", type(threading.RLock()): "threading.RLock"}


def lock_name(lock: object) -> str:
    # The classes of threading's locks live in _thread, under other names.
    known = _LOCK_NAMES.get(type(lock))
    return known or "%s.%s" % (type(lock).__module__, type(lock).__qualname__)


def thread_name(thread: Any) -> str:
    if thread is None:
        return "no thread"
    return "thread %r%s" % (thread.name, " (daemon)" if thread.daemon else "")


def logger_name(logger: logging.Logger) -> str:
    return "the root logger" if logger is logging.root else "logger %r" % logger.name


class Names:
    """Names things from the owners a walk of the configuration noted (``_reach.collect``)."""

    def __init__(self, owners: Dict[int, List[Any]]) -> None:
        self.owners = owners

    def handler_name(self, handler: logging.Handler) -> str:
        name = class_name(type(handler))
        details: List[str] = []
        filename = getattr(handler, "baseFilename", None)
        stream = getattr(handler, "stream", None)
        if isinstance(filename, str):
            details.append(repr(filename))
        elif stream is not None:
            details.append(str(getattr(stream, "name", type(stream).__name__)))
        if isinstance(handler, logging.handlers.SocketHandler):
            details.append("%s:%s" % (handler.host, handler.port))
        elif isinstance(handler, logging.handlers.SysLogHandler):
            details.append(repr(handler.address))
        elif isinstance(handler, logging.handlers.MemoryHandler):
            details.append("capacity=%d" % handler.capacity)
        text = "%s(%s)" % (name, ", ".join(details)) if details else name
        if handler.name:
            text += " named %r" % handler.name
        return text

    def listener_name(self, listener: logging.handlers.QueueListener) -> str:
        return "QueueListener in %s" % thread_name(getattr(listener, "_thread", None))

    def where(self, obj: Any, name: str, seen: Optional[Set[int]] = None) -> str:
        """``name``, then how the configuration reaches ``obj`` (from its owners)."""
        seen = set() if seen is None else seen
        seen.add(id(obj))
        ways = []
        for owner in self.owners.get(id(obj), []):
            if id(owner) in seen:
                continue
            if isinstance(owner, logging.Logger):
                ways.append("on %s" % logger_name(owner))
            elif isinstance(owner, logging.handlers.QueueListener):
                verb = "read by" if obj is owner.queue else "in"
                # After the handlers that lead to it: "behind X, read by Y".
                ways.append("%s the %s" % (verb, self.listener_name(owner)))
            elif isinstance(owner, logging.Handler):
                if isinstance(obj, logging.Handler):
                    verb = "target of"
                elif isinstance(obj, logging.handlers.QueueListener):
                    verb = "started for"
                else:
                    verb = "behind"
                ways.insert(0, "%s %s" % (verb, self.where(owner, self.handler_name(owner), seen)))
        return "%s %s" % (name, ", ".join(ways)) if ways else name

    def handler_where(self, handler: logging.Handler) -> str:
        return self.where(handler, self.handler_name(handler))


def where_of(obj: Any) -> str:
    """A handler, a queue or a stream, named as the report names it, and where it is."""
    owners: Dict[int, List[Any]] = {}
    _reach.collect(owners=owners)
    look = Names(owners)
    if isinstance(obj, logging.Handler):
        return look.handler_where(obj)
    if _reach.is_thread_queue(obj):
        return look.where(obj, queue_name(obj))
    return str(getattr(obj, "name", type(obj).__name__))
