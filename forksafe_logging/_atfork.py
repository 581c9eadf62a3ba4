"""The before/after-fork hooks: the most dangerous code in the package.

They run inside ``os.fork()`` while every other thread is frozen wherever it
happened to be. So, throughout:

- nothing here logs, and nothing waits without a deadline: every lock is
  taken with a timeout shared by the whole fork, and a lock we could not take
  is not waited for but dealt with in the child;
- the child side never calls ``release()`` (uWSGI may run it without the
  parent side having run); it re-initializes, which is safe when one thread
  is left;
- no thread is started in the child hook (that breaks gevent-patched
  programs): an inherited listener restarts on first use.

In ``"forward"`` mode a child uses nothing it inherited, so the parent takes
no handler lock and the child abandons the inherited handlers whole
(:func:`forksafe_logging._forward.abandon_and_forward`). The repairs below are
for ``"inherit"`` and ``"reset"``.

``os.register_at_fork`` runs ``before`` hooks in reverse order of registration
and ``after_*`` hooks in order. ``logging`` registers at import, before us, so
our ``before`` runs first and our ``after_in_child`` runs after the stdlib has
re-initialized the module lock and the locks of handlers it knows.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import threading
import time
import warnings

from forksafe_logging import (
    _compat,
    _endpoint,
    _fork_warning,
    _forward,
    _reach,
    _repair,
    _ring,
    _server,
    _settings,
    _structlog_locks,
)
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, List, Optional, Set, Tuple

# What the hooks use, bound here: reaching an object through a module writes
# to that module object too (its reference count), and after a fork each
# page written costs a page fault.
_close = os.close
_getpid = os.getpid
_get_ident = threading.get_ident

_modules = sys.modules
_warnings = warnings
_switch = _forward._switch
_rings_mapped = _ring.mapped
_rewire_then_call_handlers = _forward._rewire_then_call_handlers


class _Plan:
    """What one thread's ``before`` hook took, for its ``after`` hooks."""

    __slots__ = ("acquired", "busy", "busy_handlers", "complete", "held", "pid", "reach")

    def __init__(self) -> None:
        #: A forwarding child keeps its parent's plans (see after_fork_in_child):
        #: a plan is only ever acted on in the process that made it.
        self.pid = os.getpid()
        #: The walk done before the fork; the child reuses it (same memory).
        self.reach: Optional[_reach.Reach] = None
        self.acquired: List[Any] = []
        #: ``id()`` of handlers whose lock we could not take in time: a thread
        #: may be inside their ``emit()``, and their stream's state is unknown.
        self.busy: Set[int] = set()
        self.busy_handlers: List[logging.Handler] = []
        #: The module lock was taken and every lock was tried.
        self.complete = False
        #: Locks other threads held at the fork, for the warning (see _held).
        self.held: List[Any] = []


def _take(lock: Any, deadline: float, plan: _Plan) -> bool:
    try:
        taken = lock.acquire(False)
        if not taken:
            remaining = deadline - time.monotonic()
            taken = remaining > 0 and lock.acquire(True, remaining)
    except Exception:  # a handler's homemade "lock" with another signature
        return False
    if taken:
        plan.acquired.append(lock)
    return bool(taken)


def before_fork() -> None:
    """Bring logging to a consistent point: take every lock it reaches, in bounded time."""
    # Few calls here, all inlined: after a fork the parent pays a page fault
    # for each page it writes to, and calling a Python function writes to it.
    settings = state.settings
    server = state.server
    if server is not None and server.pid != _getpid():
        server = None  # inherited from the top: not this process's
    if settings is None and server is None:
        return
    if state.fd_lock.acquire(True, _endpoint.FD_LOCK_TIMEOUT):
        # No descriptor of ours is between being opened and being listed.
        state.fd_lock_holder = _get_ident()
    if settings is not None and settings.child == "forward":
        switch = _switch
        if logging._handlerList is switch.next_handlers[0]:  # type: ignore[attr-defined]
            # This process is a forked child, and that list is the one its
            # fork hook gave logging: its own children must not shut its
            # handlers down. Each forked child gets a new, empty one.
            switch.next_handlers = ([],)
    if server is not None:
        ours = state.fork_filter
        # Our listener must not be why 3.12+ warns about this fork: the
        # filter that sees to it is put in front once; again only if the
        # program has since put filters in front of it (see _fork_warning).
        if ours is not None:
            filters = _warnings.filters  # type: ignore[attr-defined]
            if not filters or filters[0] is not ours:
                _fork_warning.keep_first(in_fork_hook=True)
    structlog_locks = _structlog_locks.write_locks() if "structlog" in _modules else []
    if not structlog_locks and (
        settings is None or (settings.child == "forward" and not settings.warn_held_locks)
    ):
        # The common case of a forwarding process, kept short: after a fork
        # the parent pays a page fault for each page this code writes to.
        return
    plan = _Plan()
    state.plans[threading.get_ident()] = plan
    if settings is None:
        return
    _take_everything(settings, plan, structlog_locks)
    if settings.warn_held_locks:
        # Imported by install(warn_held_locks=True); a lookup here, not an import.
        from forksafe_logging import _held

        # Reads lock states only; the warning waits for the parent's after hook.
        plan.held = _held.observe(plan.reach, plan.acquired)


def _take_everything(
    settings: _settings.Settings, plan: _Plan, structlog_locks: List[Tuple[Any, Any]]
) -> None:
    """Take every lock logging (and structlog) reaches, in bounded time; record it in ``plan``."""
    deadline = time.monotonic() + settings.fork_timeout
    # structlog writes to its files itself, in every mode: no thread may be
    # in the middle of a line when the child's copy of the file is made.
    for _, lock in structlog_locks:
        _take(lock, deadline, plan)
    if settings.child == "forward":
        # A forwarding child never uses the logging it inherits (see the
        # child hook): there is nothing more to bring to a consistent point.
        return
    # The module lock first, as dictConfig and logging.shutdown() take it
    # before handler locks. Holding a handler lock while the stdlib's own hook
    # waits for the module lock can deadlock the parent (bpo-36533); if the
    # module lock is busy, take nothing and let the child distrust everything.
    if not _take(_compat.logging_module_lock(), deadline, plan):
        return
    reach = plan.reach = _reach.collect()
    for handler in reach.handlers:
        lock = handler.lock
        if lock is not None and not _take(lock, deadline, plan):
            plan.busy.add(id(handler))
            plan.busy_handlers.append(handler)
    for handler, lock in reach.extra_locks:
        if not _take(lock, deadline, plan) and id(handler) not in plan.busy:
            plan.busy.add(id(handler))
            plan.busy_handlers.append(handler)
    # The stdlib's stream handlers flush after every record: only handlers of
    # other classes can hold buffered bytes here.
    flushed: Set[int] = set()
    for handler in reach.custom:
        if id(handler) not in plan.busy:
            _flush_stream(handler, flushed)
    for q in reach.queues:
        if _reach.is_thread_queue(q):
            _take(q.mutex, deadline, plan)
    plan.complete = True


def _flush_stream(handler: logging.Handler, flushed: Set[int]) -> None:
    """Write out what the parent buffered, or the child would write it again.

    Only for handlers whose locks we hold, so no thread of ours is inside
    their ``emit()``. ``StreamHandler.emit`` flushes after every record, so
    this is usually an empty flush; it matters for handlers that buffer.
    """
    stream = getattr(handler, "stream", None)
    if stream is None or id(stream) in flushed:
        return
    flushed.add(id(stream))
    # Closed, or not a real stream: then there is nothing to keep consistent.
    with contextlib.suppress(Exception):
        stream.flush()


def after_fork_in_parent() -> None:
    """Release what this thread's ``before`` hook took, newest first."""
    if state.fd_lock_holder == _get_ident():
        state.fd_lock_holder = 0
        state.fd_lock.release()
    if not state.plans:
        return  # the common case: the before hook needed no plan
    plan = state.plans.pop(threading.get_ident(), None)
    if plan is None or plan.pid != os.getpid():
        return
    for lock in reversed(plan.acquired):
        lock.release()
    if plan.held:
        from forksafe_logging import _held  # imported by install(warn_held_locks=True)

        # The fork is done and every lock released: the warning may even go
        # through logging (captureWarnings).
        _held.warn(plan.held)


def after_fork_in_child() -> None:
    """Make every lock and queue usable, drop the parent's buffers, apply the child mode.

    Everything this touches costs the child a page fault per page it writes
    (copy on write): about 3 us each here, and a forwarding child often exits
    without logging. Even a call to a Python function writes to it, and in a
    child runs code for the first time: measured, inlining the three
    functions the forwarding path used to call cut about 70 us from a fork.
    So that path is written out here, reaching into the modules whose state
    it resets, and calls nothing but C.
    """
    if _compat.LOCKS_REINIT:
        # Taken by install() in a thread that is not here, perhaps; fd_lock
        # by our before hook.
        state.install_lock._at_fork_reinit()  # type: ignore[attr-defined]
        state.server_lock._at_fork_reinit()  # type: ignore[attr-defined]
        state.fd_lock._at_fork_reinit()  # type: ignore[attr-defined]
    else:  # gevent's locks (patched before we were imported), say
        state.install_lock = threading.Lock()
        state.server_lock = threading.Lock()
        state.fd_lock = threading.RLock()
    state.fd_lock_holder = 0

    # The parent's listener is not this process's, nor is the parent's
    # connection to its tree's listener. Close the child's copies of their
    # descriptors: a child that kept the listening socket open would keep
    # accepting connections into a backlog nobody reads once the top process
    # has died, and one that kept a connection open would hide its sender's
    # death from the listener. By number (see state.child_closes), and
    # nothing else; the list is emptied, or this child's own children would
    # close the numbers again when they may be this child's files. What the
    # objects of the listener and of the connection are to this child is
    # worked out when it first needs them (_server.current(), _tree.tree()
    # and _channel.channel() look at the pid).
    fds = state.child_closes
    if fds:
        for fd in fds:
            try:
                _close(fd)
            except OSError:
                pass
        del fds[:]
    if _rings_mapped:  # the parent's connections' rings: see _ring.mapped
        _ring.unmap_inherited()

    settings = state.settings
    if settings is None:
        return
    if "structlog" in _modules:
        for _, lock in _structlog_locks.write_locks():
            # Taken by our before hook, or held by a thread that is not here.
            _compat.reinit_lock(lock)
    if settings.child == "forward":
        # The plans of the parent's threads are left for the next fork to
        # overwrite: freeing them would cost more than keeping them. A child
        # of a forwarding process already forwards: its handlers are
        # forwarders, and the undo record stays as it is.
        if not state.undo:
            # See _forward: the loggers are rewired on the child's first use
            # of logging; here, the switches are armed. First, logging gets
            # a new, empty list of handlers to shut down: shutdown() takes no
            # lock (at exit, and inside dictConfig and fileConfig), and would
            # flush and close the inherited handlers: write what a thread of
            # the parent had buffered, a second time, or block for ever on a
            # stream whose lock that thread held at the fork. Code that looks
            # the list up by name (dictConfig, the stdlib's handler
            # registration, gevent's patch_all()) finds only handlers made in
            # this process from now on; shutdown()'s default argument, used
            # at exit, is rebound too. The old list is kept, never walked.
            switch = _switch
            new_handlers = switch.next_handlers
            switch.inherited_handlers = logging._handlerList  # type: ignore[attr-defined]
            logging._handlerList = new_handlers[0]  # type: ignore[attr-defined]
            logging.shutdown.__defaults__ = new_handlers
            module_lock: Any = logging._lock  # type: ignore[attr-defined]
            current = logging.Logger.callHandlers
            klass = logging.Logger.manager.loggerClass or logging._loggerClass  # type: ignore[attr-defined]
            if (
                switch.armed
                or klass.callHandlers is not current
                or klass.handle is not logging.Logger.handle
            ):
                # Rare: see _forward.rewire_in_fork_hook.
                _forward.rewire_in_fork_hook(module_lock)
                return
            switch.real = module_lock
            switch.call_handlers = current
            switch.armed = True
            logging._lock = switch  # type: ignore[attr-defined]
            logging.Logger.callHandlers = _rewire_then_call_handlers  # type: ignore[method-assign,assignment]
        return
    plan = state.plans.pop(threading.get_ident(), None)
    # Plans of threads that forked concurrently: those threads are gone.
    state.plans.clear()
    if plan is not None and plan.pid != os.getppid():
        plan = None  # left by a forwarding ancestor: not this fork's
    _repair.repair_inherited(settings, plan)


def register() -> None:
    """Register the hooks once per interpreter (children inherit them)."""
    with state.server_lock:
        if not state.hooks_registered:
            os.register_at_fork(
                before=before_fork,
                after_in_parent=after_fork_in_parent,
                after_in_child=after_fork_in_child,
            )
            state.hooks_registered = True


# A listener has started: this process is a top (or its own listener's).
_server.on_start.extend((register, _fork_warning.keep_first))
