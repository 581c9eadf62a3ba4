"""The fork-hazard detectors: what the walk of the logging configuration found, as hazards.

One method per kind of object the walk reaches (a queue, a listener, a
handler's lock, a stream, a buffer, a socket, structlog's locks, threads),
each returning the :class:`~forksafe_logging._diagnosis.Hazard` objects it
finds with the words of the remedy for the mode asked about.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing.queues
import os
import queue
import sys
import sysconfig
import threading
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from forksafe_logging import (
    _compat,
    _fork_warning,
    _naming,
    _reach,
    _server,
    _streams,
    _structlog_locks,
)
from forksafe_logging._diagnosis import Hazard

# What install() does, by mode. In "forward" mode a forked child replaces its
# handlers and never uses what it inherited (_forward.abandon_and_forward).
_FORWARDED = (
    "A forked child never uses it: the child's loggers get one handler that sends "
    "each record to the listener of the process tree, and the inherited handlers "
    "are never used, flushed or closed there."
)
_RESET_DROPS = " Then the child drops the inherited handlers (closing none) and applies its config."


class Look(_naming.Names):
    """Turns what the walk found into hazards, for one mode."""

    def __init__(self, mode: str, fork_timeout: float, owners: Dict[int, List[Any]]) -> None:
        super().__init__(owners)
        self.mode = mode
        self.fork_timeout = fork_timeout

    # -- remedies ----------------------------------------------------------

    def remedy(self, inherit: str, reset: Optional[str] = None) -> str:
        """The text for this mode; ``reset`` defaults to ``inherit`` + the handlers dropped."""
        if self.mode == "forward":
            return _FORWARDED
        if self.mode == "reset":
            return reset if reset is not None else inherit + _RESET_DROPS
        return inherit

    def before_fork(self) -> str:
        return (
            "Before the fork the parent takes it, waiting %s s at most for the whole "
            "fork, so no thread is in the middle of using it" % (self.fork_timeout,)
        )

    # -- the hazards ---------------------------------------------------------

    def of_queue(self, q: Any, listeners: Sequence[logging.handlers.QueueListener]) -> List[Hazard]:
        read = any(listener.queue is q for listener in listeners)
        where = self.where(q, _naming.queue_name(q))
        dropped = (
            " and drops its copy of the records waiting in it, which the parent writes"
            if read
            else ""
        )
        if _reach.is_thread_queue(q):
            waiting = len(getattr(q, "queue", ()))
            detail = (
                "its mutex, and the three conditions built on it, are locks that logging "
                "does not know about: if a thread is inside put() or get() at the fork, "
                "the child's first record blocks in put() forever. %s"
                % _waiting(waiting, "copied into the child")
            )
            remedy = self.remedy(
                "%s; the child re-initializes the mutex and the conditions%s."
                % (self.before_fork(), dropped)
            )
            return [Hazard("queue", where, detail, remedy, True, needs_thread=True)]
        if isinstance(q, queue.SimpleQueue):
            detail = (
                "it has no lock of Python's to inherit, but %s"
                % _waiting(q.qsize(), "copied into the child").lower()
            )
            if read:
                inherit = "If its listener starts again in the child, the copies are dropped first."
            else:
                inherit = "No thread reads the copies in the child; nothing to do."
            # Copies matter only to a listener's thread, started again in the child.
            return [Hazard("queue", where, detail, self.remedy(inherit), True, needs_thread=True)]
        if not _reach.is_process_queue(q):
            detail = (
                "a queue of a class that logging and install() do not know: its locks, "
                "if it has any, are copied as they are."
            )
            remedy = self.remedy(
                "install() does not know this class, and re-initializes nothing in it."
            )
            return [Hazard("queue", where, detail, remedy, self.mode == "forward")]
        if isinstance(q, multiprocessing.queues.SimpleQueue):
            # No feeder thread, no buffer; its locks are shared with the other
            # processes by design.
            return []
        detail = (
            "multiprocessing resets its feeder thread and buffer only in the children it "
            "starts itself. After a plain os.fork() the child's copy believes its feeder "
            "thread runs: what the child puts is buffered, and never sent."
        )
        remedy = self.remedy("The child resets it, as multiprocessing does in its own children.")
        return [Hazard("queue", where, detail, remedy, True)]

    def of_listener(self, listener: logging.handlers.QueueListener) -> List[Hazard]:
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
        remedy = self.remedy(
            "The child drops the copied records (the parent writes them) and starts the "
            "listener again on its first record, stopping it at exit.",
            "The child drops the copied records (the parent writes them), then drops the "
            "inherited handlers (closing none) and applies its config.",
        )
        return [Hazard("listener-thread", self.where(listener, self.listener_name(listener)),
                       detail, remedy, True)]  # fmt: skip

    def of_handler_lock(self, handler: logging.Handler) -> List[Hazard]:
        lock = handler.lock
        if lock is None or _compat.stdlib_reinits_lock(handler):
            return []
        detail = (
            "its lock (attribute 'lock', a %s) is one that logging does not "
            "re-initialize in a child: its class overrides createLock(). If a thread "
            "holds it at the fork, the child's first record through it blocks forever."
            % _naming.lock_name(lock)
        )
        return [self._lock_hazard(handler, lock, detail)]

    def of_extra_lock(self, handler: logging.Handler, lock: Any) -> Hazard:
        detail = (
            "its attribute %r holds a %s that logging knows nothing about. If a thread "
            "holds it at the fork, it stays held in the child forever."
            % (_reach.attribute_of(handler, lock), _naming.lock_name(lock))
        )
        return self._lock_hazard(handler, lock, detail)

    def _lock_hazard(self, handler: logging.Handler, lock: Any, detail: str) -> Hazard:
        where = self.handler_where(handler)
        if self.mode != "forward" and not hasattr(lock, "_at_fork_reinit"):
            remedy = (
                "it has no _at_fork_reinit(), so the child cannot re-initialize it. "
                "The parent still takes it before the fork when it can."
            )
            return Hazard("handler-lock", where, detail, remedy, False, needs_thread=True)
        remedy = self.remedy("%s; the child re-initializes it." % self.before_fork())
        return Hazard("handler-lock", where, detail, remedy, True, needs_thread=True)

    def of_stream(self, handler: logging.Handler) -> List[Hazard]:
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
        inherit = (
            "Before the fork the parent takes the handler's lock, waiting %s s at most "
            "for the whole fork, so no thread is inside emit()%s; if a thread still holds "
            "it then, the child gets a fresh stream over the same descriptor and never "
            "touches the old one."
            % (self.fork_timeout, "" if known else ", and flushes the stream")
        )
        # A handler of unknown class may leave bytes in the buffer with no thread at all.
        hazard = Hazard(
            "stream", self.handler_where(handler), detail, self.remedy(inherit), True, known
        )
        return [hazard]

    def of_buffer(self, handler: Any) -> Hazard:
        count = len(getattr(handler, "buffer", ()))
        detail = (
            "the records it holds in memory (%d now) are copied into the child, which "
            "writes them a second time when it flushes." % count
        )
        remedy = self.remedy(
            "The child empties its copy of the buffer; the parent writes the records."
        )
        return Hazard("buffer", self.handler_where(handler), detail, remedy, True)

    def of_socket(self, handler: logging.Handler) -> Hazard:
        connected = getattr(handler, "sock", getattr(handler, "socket", None)) is not None
        detail = (
            "it keeps one stream connection open%s. After a fork, parent and child "
            "write into the same connection, and a record cut in two by the other "
            "process's record garbles the stream from there on."
            % ("" if connected else " (none yet: it connects on its first record)")
        )
        remedy = self.remedy(
            "The child forgets the inherited connection (without closing it) and opens "
            "one of its own for its next record.",
            "The child drops the inherited handlers (closing none) and applies its config.",
        )
        return Hazard("socket", self.handler_where(handler), detail, remedy, True)

    def of_structlog(self) -> List[Hazard]:
        found = []
        for stream, lock in _structlog_locks.write_locks():
            detail = (
                "structlog's PrintLogger, WriteLogger and BytesLogger take this %s around "
                "every line they write to the file. If a thread is writing a line at the "
                "fork, the child's first line to that file blocks forever."
                % _naming.lock_name(lock)
            )
            # In every mode: structlog's loggers write to their files themselves.
            remedy = (
                "%s; the child re-initializes it. In every mode, forwarding or not: "
                "structlog's own loggers write to their files themselves. (A thread still "
                "blocked inside a write after that, on a pipe whose reader fell behind, "
                "also holds the file's own buffer lock, which nothing renews: the child's "
                "first line to that file then blocks.)" % self.before_fork()
            )
            where = "structlog's write lock for %s" % getattr(stream, "name", type(stream).__name__)
            found.append(Hazard("structlog-lock", where, detail, remedy, True, needs_thread=True))
        return found

    def of_threads(
        self,
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
                found.append(
                    Hazard(
                        "thread",
                        where,
                        "the listener of forksafe_logging does not exist in a child.",
                        "It holds no lock a child could inherit; a forked child closes its "
                        "copies of the listener's sockets.",
                        True,
                    )
                )
                continue
            detail = _THREAD_DETAIL + _doing(frames.get(thread.ident or 0))
            found.append(Hazard("thread", where, detail, self._thread_remedy(), False))
        # Threads that threading does not know of have no name to give.
        untracked = _fork_warning.os_thread_count() - len(known)
        if untracked > 0:
            found.append(
                Hazard(
                    "thread",
                    "%d thread%s not started through threading (by a C extension, or "
                    "_thread.start_new_thread())" % (untracked, "" if untracked == 1 else "s"),
                    _THREAD_DETAIL,
                    self._thread_remedy(),
                    False,
                )
            )
        return found

    def _thread_remedy(self) -> str:
        logging_locks = (
            "the child never uses the logging objects it inherited"
            if self.mode == "forward"
            else "every lock of the logging configuration is usable in the child"
        )
        return (
            "Whatever this thread holds at the fork, %s. Locks outside logging that it "
            "may hold (yours, a library's) stay held in the child: fork before starting "
            "it, or when it holds none." % logging_locks
        )


_THREAD_DETAIL = (
    "it does not exist in a child, and whatever it holds at the fork (a lock, half of "
    "a write) stays held or half-done there."
)


#: Read once, when the doctor is imported: the first get_paths() of a process
#: imports the build's configuration module, and diagnose() imports nothing.
_PATHS = sysconfig.get_paths()


def in_stdlib(path: str) -> bool:
    """Whether ``path`` (a code object's file) is the standard library's."""
    paths = _PATHS
    if path.startswith((paths["purelib"], paths["platlib"])):
        return False  # site-packages may lie inside the stdlib's directory
    return path.startswith((paths["stdlib"], "<frozen "))


def outside_stdlib(frame: Any, also: Tuple[str, ...] = ()) -> Any:
    """The innermost of ``frame`` and its callers in code neither of the stdlib nor in ``also``."""
    while frame is not None:
        path = frame.f_code.co_filename
        if path not in also and not in_stdlib(path):
            return frame
        frame = frame.f_back
    return None


def position(frame: Any) -> str:
    """``name() in file.py, line N``; the path inside the stdlib for its files."""
    path = frame.f_code.co_filename
    if in_stdlib(path) and not path.startswith("<"):
        path = os.path.relpath(path, _PATHS["stdlib"])
    else:
        path = os.path.basename(path)
    return "%s() in %s, line %d" % (frame.f_code.co_name, path, frame.f_lineno)


def _doing(frame: Any) -> str:
    """Where a thread is: its innermost frame, and the innermost outside the stdlib."""
    if frame is None:
        return ""
    text = " When looked at, it was in %s" % position(frame)
    caller = outside_stdlib(frame)
    if caller is not None and caller is not frame:
        text += ", called from %s" % position(caller)
    return text + "."


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
