"""What the logging configuration reaches: handlers, their locks, queues, listeners.

The at-fork hooks call :func:`collect` at every fork rather than keeping a
registry, so handlers and loggers created after ``install()`` are covered
without patching any stdlib class. It is a walk over a few lists and dicts:
no locks taken, nothing logged, nothing that can block.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import socket
import sys

from forksafe_logging import _compat

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Set, Tuple


class Reach:
    """Everything one walk found, each object once."""

    __slots__ = ("buffering", "custom", "extra_locks", "handlers", "listeners", "queues", "sockets")

    def __init__(self) -> None:
        self.handlers: List[logging.Handler] = []
        #: Handlers of classes outside :data:`KNOWN`: they get the full care.
        self.custom: List[logging.Handler] = []
        #: Handlers holding records in memory (``BufferingHandler``).
        self.buffering: List[Any] = []
        #: Handlers writing to a stream socket (TCP ``SocketHandler``, ``SysLogHandler``).
        self.sockets: List[logging.Handler] = []
        #: ``(handler, lock)`` for locks a handler keeps besides ``handler.lock``.
        self.extra_locks: List[Any] = []
        self.queues: List[Any] = []
        self.listeners: List[logging.handlers.QueueListener] = []


#: Handler classes of the stdlib (exactly these, not subclasses): their lock
#: comes from ``Handler.createLock``, which the stdlib re-initializes in a
#: child itself; they keep no other lock; and the stream handlers flush after
#: every record. The hooks skip work for them: every object a hook touches
#: costs a page fault after a fork (about 3 us each here).
KNOWN = frozenset(
    {
        logging.Handler,
        logging.StreamHandler,
        logging.FileHandler,
        logging.NullHandler,
        logging.handlers.RotatingFileHandler,
        logging.handlers.TimedRotatingFileHandler,
        logging.handlers.WatchedFileHandler,
        logging.handlers.SocketHandler,
        logging.handlers.DatagramHandler,
        logging.handlers.SysLogHandler,
        logging.handlers.SMTPHandler,
        logging.handlers.HTTPHandler,
        logging.handlers.BufferingHandler,
        logging.handlers.MemoryHandler,
        logging.handlers.QueueHandler,
        type(logging.lastResort),
    }
)


def _extra_locks(handler: logging.Handler) -> List[Any]:
    found = []
    for name, value in vars(handler).items():
        if name != "lock" and isinstance(value, _compat.LOCK_TYPES):
            found.append(value)
    return found


def attribute_of(handler: logging.Handler, lock: Any) -> str:
    """The name of the attribute of ``handler`` that holds ``lock`` (for reports)."""
    names = [name for name, value in vars(handler).items() if value is lock]
    return names[0] if names else "?"


def loggers() -> List[logging.Logger]:
    """The root logger and every other logger (not the placeholders)."""
    found: List[logging.Logger] = [logging.root]
    # A dict copy is atomic under the GIL; iterating the live dict is not.
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            found.append(logger)
    return found


def inside_a_handler() -> bool:
    """Whether this thread may hold a lock the listener needs: it logs from inside a handler.

    Such a record must not wait for the listener, which may be waiting for
    that very lock to dispatch a child's record. Looks at logging's module
    lock and the lock of every handler, whether logging still lists it or
    only a logger holds it (``dictConfig`` drops the handlers it replaces
    from its list, though loggers it leaves alone keep using them). A lock
    that cannot say who holds it (a plain ``Lock``) counts when it is taken
    at all: a record goes out of turn rather than wait for itself. Walks
    every handler: only called when a record of the top would otherwise
    wait its turn (:mod:`forksafe_logging._order`).
    """
    handlers: List[Any] = [ref() for ref in list(logging._handlerList)]  # type: ignore[attr-defined]
    for logger in loggers():
        handlers.extend(logger.handlers)
    seen = set()
    for lock in [getattr(logging, "_lock", None), *(getattr(h, "lock", None) for h in handlers)]:
        if lock is None or id(lock) in seen:
            continue
        seen.add(id(lock))
        owned = getattr(lock, "_is_owned", None)
        if owned is None:
            owned = getattr(lock, "locked", None)
        try:
            if owned is not None and owned():
                return True
        except Exception:  # a lock of a kind we do not know: it cannot stop the check
            continue
    return False


def _writes_to_stream_socket(handler: logging.Handler) -> bool:
    # Datagrams do not interleave: a DatagramHandler or UDP syslog is fine shared.
    if isinstance(handler, logging.handlers.SocketHandler):
        return not isinstance(handler, logging.handlers.DatagramHandler)
    if isinstance(handler, logging.handlers.SysLogHandler):
        return bool(handler.socktype == socket.SOCK_STREAM)
    return False


def collect(in_child: bool = False, owners: Optional[Dict[int, List[Any]]] = None) -> Reach:
    """Walk the loggers, their handlers, and the listeners that were running.

    ``owners``, when given, is filled with what led to each object found:
    ``id(obj)`` to the loggers, handlers and listeners that refer to it (a
    listener found through its thread has none). The doctor passes it to say
    where a hazard is; the hooks do not, and pay one test per step for it.
    """
    reach = Reach()
    seen: Set[int] = set()
    pending: List[Any] = []
    for logger in loggers():
        pending.extend(logger.handlers)
        if owners is not None:
            _note(owners, logger, logger.handlers)
    for target in _compat.thread_targets(in_child):
        owner = getattr(target, "__self__", None)
        if isinstance(owner, logging.handlers.QueueListener):
            pending.append(owner)

    while pending:
        obj = pending.pop()
        if isinstance(obj, _QueueRef):
            # Seen by the queue's id: the wrapper lives only until the next
            # one is made, which may then get its id.
            if id(obj.queue) not in seen:
                seen.add(id(obj.queue))
                reach.queues.append(obj.queue)
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, logging.handlers.QueueListener):
            reach.listeners.append(obj)
            pending.extend(obj.handlers)
            pending.append(_QueueRef(obj.queue))
            if owners is not None:
                _note(owners, obj, [*obj.handlers, obj.queue])
        elif isinstance(obj, logging.Handler):
            reach.handlers.append(obj)
            if type(obj) not in KNOWN:
                reach.custom.append(obj)
                reach.extra_locks.extend((obj, lock) for lock in _extra_locks(obj))
            if isinstance(obj, logging.handlers.BufferingHandler):
                reach.buffering.append(obj)
            elif _writes_to_stream_socket(obj):
                reach.sockets.append(obj)
            if isinstance(obj, logging.handlers.QueueHandler):
                pending.append(_QueueRef(obj.queue))
                listener = _compat.queue_handler_listener(obj)
                if listener is not None:
                    pending.append(listener)
                if owners is not None:
                    _note(owners, obj, [obj.queue, listener])
            target = getattr(obj, "target", None)  # MemoryHandler and kin
            if isinstance(target, logging.Handler):
                pending.append(target)
                if owners is not None:
                    _note(owners, obj, [target])
    return reach


def _note(owners: Dict[int, List[Any]], owner: Any, found: List[Any]) -> None:
    for obj in found:
        if obj is not None:
            owners.setdefault(id(obj), []).append(owner)


class _QueueRef:
    """Wraps a queue so the walk tells it from a handler (queues may be anything)."""

    __slots__ = ("queue",)

    def __init__(self, q: Any) -> None:
        self.queue = q


def is_thread_queue(q: object) -> bool:
    """A ``queue.Queue`` (or subclass): one process, guarded by ``q.mutex``."""
    return isinstance(q, queue.Queue)


def is_process_queue(q: object) -> bool:
    """A ``multiprocessing`` queue: shared with other processes through a pipe."""
    queues = sys.modules.get("multiprocessing.queues")
    # Not imported: then no such queue exists (and importing it costs every fork).
    return queues is not None and isinstance(q, (queues.Queue, queues.SimpleQueue))


def is_in_process_queue(q: object) -> bool:
    """A queue whose items live in this process's memory only.

    A child inherits a copy of them: they are the parent's to handle.
    """
    return is_thread_queue(q) or isinstance(q, queue.SimpleQueue)


def levels() -> Tuple[Dict[str, int], int]:
    """The levels set in this process's logger tree, and ``logging.disable``'s level."""
    found = {logger.name: logger.level for logger in loggers() if logger.level != logging.NOTSET}
    found[""] = logging.root.level
    return found, logging.Logger.manager.disable


def apply_levels(found: Dict[str, int], disable: int) -> None:
    """Set the levels :func:`levels` found (in another process), and ``logging.disable``'s."""
    for name, level in found.items():
        (logging.getLogger(name) if name else logging.root).setLevel(level)
    logging.disable(disable)
