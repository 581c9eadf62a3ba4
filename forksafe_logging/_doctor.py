"""The fork-hazard report: what a fork would copy unsafely, and what ``install()`` does about it.

:func:`diagnose` looks at the logging configuration through the same walk the
at-fork hooks make (:func:`forksafe_logging._reach.collect`), so the report
names what the hooks act on. Like the hooks' walk, it reads lists and dicts
only: it takes no lock, starts nothing, and changes nothing, so it can run in
a program at any moment, even while other threads log.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.handlers
import multiprocessing.queues
import os
import queue
import sys
import sysconfig
import textwrap
import threading
from typing import Any, Dict, Iterable, List, Literal, Optional, Sequence, Set, Tuple

from forksafe_logging import (
    _compat,
    _naming,
    _reach,
    _server,
    _settings,
    _streams,
    _structlog_locks,
)

#: Every kind of :class:`Hazard`, in the order a report lists them.
KINDS = (
    "queue",
    "listener-thread",
    "handler-lock",
    "stream",
    "buffer",
    "socket",
    "structlog-lock",
    "thread",
)

#: The kinds that are threads: with one of them, no hazard is latent.
_THREAD_KINDS = ("listener-thread", "thread")


@dataclasses.dataclass(frozen=True)
class Hazard:
    """One thing that a fork would copy unsafely without the library.

    Attributes:
        kind: What it is, one of ``"queue"`` (the queue behind a
            ``QueueHandler``), ``"listener-thread"`` (a running stdlib
            ``QueueListener``), ``"handler-lock"`` (a lock of a handler that
            ``logging`` does not re-initialize in a child), ``"stream"`` (a
            handler writing to a buffered file object), ``"buffer"`` (records
            held by a ``MemoryHandler`` or another ``BufferingHandler``),
            ``"socket"`` (a connection a ``SocketHandler`` or TCP
            ``SysLogHandler`` keeps open), ``"structlog-lock"`` (a write lock
            of structlog's own loggers) or ``"thread"`` (another thread).
        where: The object, and where the logging configuration refers to it.
        detail: What goes wrong in a forked child because of it.
        remedy: What :func:`~forksafe_logging.install` does about it, in the
            mode the report describes (:attr:`Diagnosis.mode`), or what to do
            when it does nothing.
        covered: Whether ``install()``, in that mode, makes a forked child
            safe from it.
        needs_thread: Whether it strikes only if another thread is using
            the object at the fork (a lock held, a write blocked). With no
            other thread running when looked at, it is
            :attr:`~Diagnosis.latent`.

    .. versionchanged:: 0.4.0
       ``needs_thread`` is new.
    """

    kind: str
    where: str
    detail: str
    remedy: str
    covered: bool
    needs_thread: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """The fields, as a dictionary ready for :func:`json.dumps`."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` found in one process, at one moment.

    ``str()`` of it is the report that ``python -m forksafe_logging doctor``
    prints.

    Attributes:
        hazards: Everything found, sorted by kind (in the order of
            :attr:`Hazard.kind`'s list).
        installed: Whether :func:`~forksafe_logging.install` is in force now.
        mode: The ``child=`` mode whose remedies :attr:`Hazard.remedy`
            describes: the one in force, or the one asked for.
        fork_timeout: The ``fork_timeout`` of that ``install()``.
        pid: The process examined.
        python: Its Python version.
        start_method: The start method ``multiprocessing`` (and
            ``concurrent.futures``) uses for its children in this process:
            set by the program, or this Python's default (``forkserver`` on
            Linux from 3.14, ``fork`` before). ``spawn`` children get
            nothing from ``"inherit"`` or ``"reset"``; ``forkserver``
            children get them from 3.14 if the main module calls
            ``install()`` when imported.
        start_method_is_default: Whether :attr:`start_method` is the
            default, the program having chosen none yet.

    .. versionchanged:: 0.4.0
       ``start_method`` and ``start_method_is_default`` are new.
    """

    hazards: Tuple[Hazard, ...]
    installed: bool
    mode: str
    fork_timeout: float
    pid: int
    python: str
    start_method: str = "fork"
    start_method_is_default: bool = True

    @property
    def uncovered(self) -> Tuple[Hazard, ...]:
        """The hazards that ``install()``, in :attr:`mode`, leaves as they are."""
        return tuple(h for h in self.hazards if not h.covered)

    @property
    def latent(self) -> Tuple[Hazard, ...]:
        """The hazards that cannot strike at this moment: no other thread runs.

        Each needs another thread inside the object at the fork
        (:attr:`Hazard.needs_thread`); with only the thread that would fork
        running, a fork now copies them safely. They become hazards as soon as
        the program forks while another thread logs.

        .. versionadded:: 0.4.0
        """
        if any(h.kind in _THREAD_KINDS for h in self.hazards):
            return ()
        return tuple(h for h in self.hazards if h.needs_thread)

    @property
    def summary(self) -> str:
        """One line: how many hazards, how many ``install()`` covers, which it does not."""
        if not self.hazards:
            return "No fork hazards found."
        latent = self.latent
        present = tuple(h for h in self.hazards if not h.needs_thread or not latent)
        if not present:
            count = len(latent)
            return (
                "No fork hazard at this moment: no other thread runs. %s listed would be "
                "one%s if another thread used logging during a fork (%s)."
                % (
                    "The one" if count == 1 else "The %d" % count,
                    "" if count == 1 else " each",
                    self._count(latent).split("; ", 1)[1],
                )
            )
        text = self._count(present)
        if latent:
            text += "; %d more only if another thread used logging during a fork" % len(latent)
        return text + "."

    def _count(self, hazards: Tuple[Hazard, ...]) -> str:
        count = len(hazards)
        found = "%d fork hazard%s" % (count, "" if count == 1 else "s")
        mode = 'install(child="%s")' % self.mode
        uncovered = [h for h in hazards if not h.covered]
        if not uncovered:
            return "%s; %s covers %s" % (found, mode, "it" if count == 1 else "all of them")
        return "%s; %s covers %d, not: %s" % (
            found,
            mode,
            count - len(uncovered),
            ", ".join(sorted({h.kind for h in uncovered}, key=KINDS.index)),
        )

    def advice(self, fork_at: Optional[str] = None) -> str:
        """What to do, in a few lines: the lines to add, and where.

        ``fork_at`` names the program's first fork (``"app.py, line 12"``),
        if known: ``install()`` goes before it.

        .. versionadded:: 0.4.0
        """
        uncovered = self.uncovered
        # Children that are not forked from here get this process's handlers
        # in "forward" mode only, and only once install() is active.
        lost = self.start_method != "fork" and (self.mode != "forward" or not self.installed)
        if self.installed:
            return self._advice_installed(lost)
        if not self.hazards and not lost:
            return "What to do: nothing for now; no fork would copy anything unsafely."
        latent_ids = {id(h) for h in self.latent}
        covered = [h for h in self.hazards if h.covered]
        why = []
        if any(id(h) not in latent_ids for h in covered):
            why.append("to cover the hazards above")
        elif covered:
            why.append("so that a fork stays safe once other threads log")
        call = "forksafe_logging.install()"
        if lost:
            why.append(
                "so that what children started with %s log reaches these handlers"
                % self.start_method
            )
        elif self.mode != "forward":
            call = 'forksafe_logging.install(child="%s")' % self.mode
        if not why:
            return fill(
                "What to do: install() does not cover what is listed; see the entries "
                'marked "Not covered by install()" above.'
            )
        where = (
            "before %s (the first fork)" % fork_at if fork_at else "before the program's first fork"
        )
        text = fill("What to do: add these two lines %s, %s:" % (where, " and ".join(why)))
        text += "\n\n    import forksafe_logging\n    %s" % call
        if uncovered:
            text += '\n\nThen see the entries marked "Not covered by install()" above.'
        return text

    def _advice_installed(self, lost: bool) -> str:
        if lost:
            return fill(
                'What to do: children started with %s get nothing from install(child="%s"); '
                'install(child="forward") sends what they log to these handlers.'
                % (self.start_method, self.mode)
            )
        if self.uncovered:
            return fill(
                "What to do: install() is active; see the entries marked "
                '"Not covered by install()" above.'
            )
        if not self.hazards:
            return "What to do: nothing; install() is active."
        return "What to do: nothing; install() is active and covers what is listed."

    def to_dict(self) -> Dict[str, Any]:
        """Everything, as a dictionary ready for :func:`json.dumps`."""
        found = dataclasses.asdict(self)
        found["summary"] = self.summary
        return found

    def __str__(self) -> str:
        return self.report()

    def report(self, fork_at: Optional[str] = None) -> str:
        """The report, ending with :meth:`advice` (given ``fork_at``)."""
        lines = ["Fork hazards in process %d (Python %s)" % (self.pid, self.python)]
        options = 'child="%s", fork_timeout=%s' % (self.mode, self.fork_timeout)
        if self.installed:
            lines.append("install() is active (%s)." % options)
        else:
            lines.append(
                fill(
                    "install() is not active; the remedies are what install(%s) would do." % options
                )
            )
        if self.start_method != "fork" and self.mode != "forward":
            lines.append(
                fill(
                    'multiprocessing starts its children with "%s" here%s: they are not '
                    'forked from this process, so install(child="%s") does nothing for them, '
                    "and what they log is lost unless they configure logging themselves "
                    "(from Python 3.14, a forkserver child has what the main module sets up "
                    "when imported, install() included). "
                    'child="forward" covers every start method.'
                    % (
                        self.start_method,
                        " (this Python's default)" if self.start_method_is_default else "",
                        self.mode,
                    )
                )
            )
        elif self.start_method != "fork" and not self.installed:
            lines.append(
                fill(
                    'multiprocessing starts its children with "%s" here%s: they are not '
                    "forked from this process, and what they log does not reach its handlers "
                    "unless they configure logging themselves; install() sends it there."
                    % (
                        self.start_method,
                        " (this Python's default)" if self.start_method_is_default else "",
                    )
                )
            )
        latent = self.latent
        latent_ids = {id(h) for h in latent}
        ordered = [h for h in self.hazards if id(h) not in latent_ids] + list(latent)
        for number, hazard in enumerate(ordered, 1):
            lines.append("")
            if latent and hazard is latent[0]:
                lines.append(
                    fill(
                        "Only if another thread used logging during a fork (none runs "
                        "now, so a fork at this moment copies these safely):"
                    )
                )
                lines.append("")
            lines.append(fill("%d. [%s] %s" % (number, hazard.kind, hazard.where), "   "))
            lines.append(fill("At a fork: " + hazard.detail, "   ", "   "))
            label = "install()" if hazard.covered else "Not covered by install()"
            lines.append(fill("%s: %s" % (label, hazard.remedy), "   ", "   "))
        lines.append("")
        lines.append(fill(self.summary))
        lines.append("")
        lines.append(self.advice(fork_at))
        return "\n".join(lines)


def fill(text: str, indent: str = "", first: str = "") -> str:
    """``text`` wrapped for a terminal, every line but the first indented by ``indent``."""
    return textwrap.fill(
        text,
        width=79,
        initial_indent=first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def diagnose(child: Optional[Literal["forward", "inherit", "reset"]] = None) -> Diagnosis:
    """List what a fork of this process would copy unsafely, were it not for the library.

    It looks at the logging configuration as it is now, the way the fork
    hooks of :func:`~forksafe_logging.install` do at each fork, and at the
    threads that would not exist in a child: the queues behind
    ``QueueHandler``\\ s, running ``QueueListener``\\ s, locks that
    ``logging`` does not re-initialize in a child, buffered streams, memory
    buffers, sockets, structlog's write locks (only if structlog is imported
    already: this never imports it), and the other threads. For each it says
    what goes wrong in a child and what ``install()`` does about it.

    It changes nothing: it takes no lock, starts no thread, and imports none
    of the program's modules, so it is safe to call at any time, from any
    thread. Threads other than
    the calling one, which stands for the thread that would fork, are listed.

    Args:
        child: The ``install()`` mode whose remedies to describe
            (``"forward"``, ``"inherit"`` or ``"reset"``). ``None``: the mode
            in force, or ``"forward"`` (``install()``'s default) if it is not
            installed.

    Returns:
        The hazards found, with ``install()``'s state. ``str()`` of it is a
        readable report; :meth:`Diagnosis.to_dict` gives plain data.

    Raises:
        ValueError: ``child`` is not a known mode.

    .. versionadded:: 0.3.0
    """
    return examine(child)


def examine(
    child: Optional[str] = None,
    forking: Optional[threading.Thread] = None,
    ignore: Iterable[int] = (),
) -> Diagnosis:
    """:func:`diagnose`, with the thread that would fork and threads to leave out named.

    ``forking`` defaults to the calling thread; ``ignore`` holds idents of
    threads that are not the program's (the doctor's watchdog).
    """
    settings = _settings.current
    if child is None:
        child = settings.child if settings is not None else "forward"
    else:
        _settings.check_child(child)
    fork_timeout = settings.fork_timeout if settings is not None else _settings.DEFAULT_FORK_TIMEOUT
    owners: Dict[int, List[Any]] = {}
    reach = _reach.collect(owners=owners)
    look = _Look(child, fork_timeout, owners)
    hazards: List[Hazard] = []
    for q in reach.queues:
        hazards.extend(look.of_queue(q, reach.listeners))
    for listener in reach.listeners:
        hazards.extend(look.of_listener(listener))
    for handler in reach.custom:
        hazards.extend(look.of_handler_lock(handler))
    for handler, lock in reach.extra_locks:
        hazards.append(look.of_extra_lock(handler, lock))
    for handler in reach.handlers:
        hazards.extend(look.of_stream(handler))
    for handler in reach.buffering:
        hazards.append(look.of_buffer(handler))
    for handler in reach.sockets:
        hazards.append(look.of_socket(handler))
    hazards.extend(look.of_structlog())
    forking = forking if forking is not None else threading.current_thread()
    hazards.extend(look.of_threads(reach.listeners, forking, set(ignore)))
    hazards.sort(key=lambda h: KINDS.index(h.kind))  # stable: walk order within a kind
    method, is_default = _compat.start_method()
    return Diagnosis(
        hazards=tuple(hazards),
        installed=settings is not None,
        mode=child,
        fork_timeout=fork_timeout,
        pid=os.getpid(),
        python="%d.%d.%d" % sys.version_info[:3],
        start_method=method,
        start_method_is_default=is_default,
    )


# What install() does, by mode. In "forward" mode a forked child replaces its
# handlers and never uses what it inherited (_forward.abandon_and_forward).
_FORWARDED = (
    "A forked child never uses it: the child's loggers get one handler that sends "
    "each record to the listener of the process tree, and the inherited handlers "
    "are never used, flushed or closed there."
)
_RESET_DROPS = " Then the child drops the inherited handlers (closing none) and applies its config."


class _Look(_naming.Names):
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
        untracked = _compat.os_thread_count() - len(known)
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
