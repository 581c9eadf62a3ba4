"""The fork-hazard detectors: what the walk of the logging configuration found, as hazards.

One small function per kind of object the walk reaches (a queue, a
listener, a handler's lock, a stream, a buffer, a socket, structlog's locks,
threads), each returning the :class:`~forksafe_logging.Hazard`
objects it finds. What ``install()`` does about each, in each mode, is one
table, :data:`REMEDIES`; :class:`Look` holds what every detector needs (the
mode asked about, the fork timeout, and how to name things).
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing.queues
import queue
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from forksafe_logging import (
    _compat,
    _fork_warning,
    _frames,
    _naming,
    _reach,
    _server,
    _streams,
    _structlog_locks,
)
from forksafe_logging._hazard import Hazard

# What install() does in "forward" mode, for every hazard but those below
# that say otherwise: a forked child replaces its handlers and never uses
# what it inherited (_forward.abandon_and_forward).
_FORWARDED = (
    "A forked child never uses it: the child's loggers get one handler that sends "
    "each record to the listener of the process tree, and the inherited handlers "
    "are never used, flushed or closed there."
)
_RESET_DROPS = " Then the child drops the inherited handlers (closing none) and applies its config."
_BEFORE_FORK = (
    "Before the fork the parent takes it, waiting %(fork_timeout)s s at most for the whole "
    "fork, so no thread is in the middle of using it"
)
_OUTSIDE_LOGGING = (
    " Locks outside logging that it may hold (yours, a library's) stay held in the "
    "child: fork before starting it, or when it holds none."
)

_STRUCTLOG = (
    "%(before_fork)s; the child re-initializes it. In every mode, forwarding or not: "
    "structlog's own loggers write to their files themselves. (A thread still "
    "blocked inside a write after that, on a pipe whose reader fell behind, "
    "also holds the file's own buffer lock, which nothing renews: the child's "
    "first line to that file then blocks.)"
)
_OUR_LISTENER = (
    "It holds no lock a child could inherit; a forked child closes its copies of the "
    "listener's sockets."
)

#: What install() does about each hazard, by mode: ``(inherit, reset,
#: forward)``. ``reset`` None: ``inherit`` and the handlers dropped; ``forward``
#: None: the child never uses it. ``%(fork_timeout)s`` and
#: ``%(before_fork)s`` are filled in for every entry, other fields by the
#: detector that names the entry.
REMEDIES: Dict[str, Tuple[str, Optional[str], Optional[str]]] = {
    "thread-queue": (
        "%(before_fork)s; the child re-initializes the mutex and the conditions%(dropped)s.",
        None, None,
    ),
    "simple-queue-read": (
        "If its listener starts again in the child, the copies are dropped first.", None, None,
    ),
    "simple-queue-unread": (
        "No thread reads the copies in the child; nothing to do.", None, None,
    ),
    "unknown-queue": (
        "install() does not know this class, and re-initializes nothing in it.", None, None,
    ),
    "process-queue": (
        "The child resets it, as multiprocessing does in its own children.", None, None,
    ),
    "listener": (
        "The child drops the copied records (the parent writes them) and starts the "
        "listener again on its first record, stopping it at exit.",
        "The child drops the copied records (the parent writes them), then drops the "
        "inherited handlers (closing none) and applies its config.",
        None,
    ),
    "lock": ("%(before_fork)s; the child re-initializes it.", None, None),
    "lock-without-reinit": (
        "it has no _at_fork_reinit(), so the child cannot re-initialize it. "
        "The parent still takes it before the fork when it can.",
        "it has no _at_fork_reinit(), so the child cannot re-initialize it. "
        "The parent still takes it before the fork when it can.",
        None,
    ),
    "stream": (
        "Before the fork the parent takes the handler's lock, waiting %(fork_timeout)s s at "
        "most for the whole fork, so no thread is inside emit()%(flushes)s; if a thread "
        "still holds it then, the child gets a fresh stream over the same descriptor and "
        "never touches the old one.",
        None, None,
    ),
    "buffer": (
        "The child empties its copy of the buffer; the parent writes the records.", None, None,
    ),
    "socket": (
        "The child forgets the inherited connection (without closing it) and opens "
        "one of its own for its next record.",
        "The child drops the inherited handlers (closing none) and applies its config.",
        None,
    ),
    # structlog's loggers write to their files themselves: in every mode.
    "structlog-lock": (_STRUCTLOG, _STRUCTLOG, _STRUCTLOG),
    "our-listener": (_OUR_LISTENER, _OUR_LISTENER, _OUR_LISTENER),
    "thread": (
        "Whatever this thread holds at the fork, every lock of the logging configuration "
        "is usable in the child." + _OUTSIDE_LOGGING,
        "Whatever this thread holds at the fork, every lock of the logging configuration "
        "is usable in the child." + _OUTSIDE_LOGGING,
        "Whatever this thread holds at the fork, the child never uses the logging "
        "objects it inherited." + _OUTSIDE_LOGGING,
    ),
}  # fmt: skip


class Look(_naming.Names):
    """What every detector needs: the mode asked about, the fork timeout, names."""

    def __init__(self, mode: str, fork_timeout: float, owners: Dict[int, List[Any]]) -> None:
        super().__init__(owners)
        self.mode = mode
        self.fork_timeout = fork_timeout

    def remedy(self, key: str, **fields: str) -> str:
        """What install() does, in this mode, about the hazard :data:`REMEDIES` calls ``key``."""
        inherit, reset, forward = REMEDIES[key]
        if self.mode == "forward":
            text = forward if forward is not None else _FORWARDED
        elif self.mode == "reset":
            text = reset if reset is not None else inherit + _RESET_DROPS
        else:
            text = inherit
        values: Dict[str, object] = {"fork_timeout": self.fork_timeout, **fields}
        values["before_fork"] = _BEFORE_FORK % values
        return text % values


# -- the detectors ---------------------------------------------------------------


def queue_hazards(
    look: Look, q: Any, listeners: Sequence[logging.handlers.QueueListener]
) -> List[Hazard]:
    read = any(listener.queue is q for listener in listeners)
    where = look.where(q, _naming.queue_name(q))
    if _reach.is_thread_queue(q):
        waiting = len(getattr(q, "queue", ()))
        detail = (
            "its mutex, and the three conditions built on it, are locks that logging "
            "does not know about: if a thread is inside put() or get() at the fork, "
            "the child's first record blocks in put() forever. %s"
            % _waiting(waiting, "copied into the child")
        )
        dropped = (
            " and drops its copy of the records waiting in it, which the parent writes"
            if read
            else ""
        )
        remedy = look.remedy("thread-queue", dropped=dropped)
        return [Hazard("queue", where, detail, remedy, True, needs_thread=True)]
    if isinstance(q, queue.SimpleQueue):
        detail = (
            "it has no lock of Python's to inherit, but %s"
            % _waiting(q.qsize(), "copied into the child").lower()
        )
        remedy = look.remedy("simple-queue-read" if read else "simple-queue-unread")
        # Copies matter only to a listener's thread, started again in the child.
        return [Hazard("queue", where, detail, remedy, True, needs_thread=True)]
    if not _reach.is_process_queue(q):
        detail = (
            "a queue of a class that logging and install() do not know: its locks, "
            "if it has any, are copied as they are."
        )
        remedy = look.remedy("unknown-queue")
        return [Hazard("queue", where, detail, remedy, look.mode == "forward")]
    if isinstance(q, multiprocessing.queues.SimpleQueue):
        # No feeder thread, no buffer; its locks are shared with the other
        # processes by design.
        return []
    detail = (
        "multiprocessing resets its feeder thread and buffer only in the children it "
        "starts itself. After a plain os.fork() the child's copy believes its feeder "
        "thread runs: what the child puts is buffered, and never sent."
    )
    return [Hazard("queue", where, detail, look.remedy("process-queue"), True)]


def listener_hazards(look: Look, listener: logging.handlers.QueueListener) -> List[Hazard]:
    thread = getattr(listener, "_thread", None)
    if thread is None or not _reach.is_in_process_queue(listener.queue):
        # Stopped, or reading a multiprocessing queue that the children
        # write to by design: nothing of it is copied unsafely.
        return []
    detail = (
        "its thread does not exist in a child: records the child puts on the queue "
        "are never written, and the child's copy of the queue holds the records the "
        "parent had not written yet."
    )
    where = look.where(listener, look.listener_name(listener))
    return [Hazard("listener-thread", where, detail, look.remedy("listener"), True)]


def handler_lock_hazards(look: Look, handler: logging.Handler) -> List[Hazard]:
    lock = handler.lock
    if lock is None or _compat.stdlib_reinits_lock(handler):
        return []
    detail = (
        "its lock (attribute 'lock', a %s) is one that logging does not "
        "re-initialize in a child: its class overrides createLock(). If a thread "
        "holds it at the fork, the child's first record through it blocks forever."
        % _naming.lock_name(lock)
    )
    return [_lock_hazard(look, handler, lock, detail)]


def extra_lock_hazard(look: Look, handler: logging.Handler, lock: Any) -> Hazard:
    detail = (
        "its attribute %r holds a %s that logging knows nothing about. If a thread "
        "holds it at the fork, it stays held in the child forever."
        % (_reach.attribute_of(handler, lock), _naming.lock_name(lock))
    )
    return _lock_hazard(look, handler, lock, detail)


def _lock_hazard(look: Look, handler: logging.Handler, lock: Any, detail: str) -> Hazard:
    where = look.handler_where(handler)
    if look.mode != "forward" and not hasattr(lock, "_at_fork_reinit"):
        remedy = look.remedy("lock-without-reinit")
        return Hazard("handler-lock", where, detail, remedy, False, needs_thread=True)
    return Hazard("handler-lock", where, detail, look.remedy("lock"), True, needs_thread=True)


def stream_hazards(look: Look, handler: logging.Handler) -> List[Hazard]:
    stream = getattr(handler, "stream", None)
    fd = _streams.descriptor(stream)
    if fd is None:
        return []
    known = type(handler) in _reach.KNOWN
    detail = (
        "it writes to a buffered file object (descriptor %d), which has a lock of "
        "its own, in C, that nothing re-initializes after a fork (CPython "
        "gh-84579). A thread blocked inside write() at the fork (on a pipe whose "
        "reader fell behind) leaves the child a stream it can never write to%s."
        % (fd, _std_stream_note(stream))
    )
    if not known:
        detail += (
            " A handler of this class may also leave bytes in the buffer between "
            "records, which the child would write a second time."
        )
    remedy = look.remedy("stream", flushes="" if known else ", and flushes the stream")
    # A handler of unknown class may leave bytes in the buffer with no thread at all.
    return [Hazard("stream", look.handler_where(handler), detail, remedy, True, known)]


def buffer_hazard(look: Look, handler: Any) -> Hazard:
    count = len(getattr(handler, "buffer", ()))
    detail = (
        "the records it holds in memory (%d now) are copied into the child, which "
        "writes them a second time when it flushes." % count
    )
    return Hazard("buffer", look.handler_where(handler), detail, look.remedy("buffer"), True)


def socket_hazard(look: Look, handler: logging.Handler) -> Hazard:
    connected = getattr(handler, "sock", getattr(handler, "socket", None)) is not None
    detail = (
        "it keeps one stream connection open%s. After a fork, parent and child "
        "write into the same connection, and a record cut in two by the other "
        "process's record garbles the stream from there on."
        % ("" if connected else " (none yet: it connects on its first record)")
    )
    return Hazard("socket", look.handler_where(handler), detail, look.remedy("socket"), True)


def structlog_hazards(look: Look) -> List[Hazard]:
    found = []
    for stream, lock in _structlog_locks.write_locks():
        detail = (
            "structlog's PrintLogger, WriteLogger and BytesLogger take this %s around "
            "every line they write to the file. If a thread is writing a line at the "
            "fork, the child's first line to that file blocks forever." % _naming.lock_name(lock)
        )
        where = "structlog's write lock for %s" % getattr(stream, "name", type(stream).__name__)
        remedy = look.remedy("structlog-lock")
        found.append(Hazard("structlog-lock", where, detail, remedy, True, needs_thread=True))
    return found


def thread_hazards(
    look: Look,
    listeners: Sequence[logging.handlers.QueueListener],
    forking: threading.Thread,
    ignore: Set[int],
) -> List[Hazard]:
    skip = set(ignore) | {forking.ident}
    # Listener threads have a hazard of their own, above.
    skip.update(getattr(getattr(lst, "_thread", None), "ident", None) for lst in listeners)
    server = _server.current()
    ours = server.thread.ident if server is not None else None
    found = []
    known = _compat.threads()
    frames = sys._current_frames()
    for thread in known:
        if thread.ident in skip:
            continue
        where = _naming.thread_name(thread)
        if thread.ident == ours:
            detail = "the listener of forksafe_logging does not exist in a child."
            found.append(Hazard("thread", where, detail, look.remedy("our-listener"), True))
            continue
        detail = _THREAD_DETAIL + _frames.doing(frames.get(thread.ident or 0))
        found.append(Hazard("thread", where, detail, look.remedy("thread"), False))
    # Threads that threading does not know of have no name to give.
    untracked = _fork_warning.os_thread_count() - len(known)
    if untracked > 0:
        where = (
            "%d thread%s not started through threading (by a C extension, or "
            "_thread.start_new_thread())" % (untracked, "" if untracked == 1 else "s")
        )
        found.append(Hazard("thread", where, _THREAD_DETAIL, look.remedy("thread"), False))
    return found


_THREAD_DETAIL = (
    "it does not exist in a child, and whatever it holds at the fork (a lock, half of "
    "a write) stays held or half-done there."
)


def _waiting(count: int, fate: str) -> str:
    if count == 0:
        return "Nothing is waiting in it now; what is waiting at the fork is %s." % fate
    return "%d record%s waiting in it now %s %s." % (
        count,
        "" if count == 1 else "s",
        "is" if count == 1 else "are",
        fate,
    )


def _std_stream_note(stream: Any) -> str:
    for name in ("stderr", "stdout"):
        if getattr(sys, name) is stream:
            return ", nor print() or a traceback through sys.%s" % name
    return ""
