"""Every difference between the Python versions we support (3.9 to 3.15), in one place.

The at-fork code never tests ``sys.version_info`` itself: it calls the helpers
here, and each helper names the version whose behaviour it papers over.
Where a helper says "3.9 to 3.15", the private name it reads was checked in
each of those versions' sources.

What 3.14 and 3.15 changed that the library meets, and what it does:

- 3.14: ``multiprocessing``'s default start method on Linux (and other POSIX
  systems but macOS) is ``forkserver``, not ``fork`` (gh-84559); later 3.14
  releases fall back to ``spawn`` where no temporary directory is writable
  (gh-155717). :func:`start_method` reads it for the report.
- 3.14: the forkserver really imports the main module before it forks
  children (``__main__`` was always in its preload list, but up to 3.13
  ``ensure_running()`` looked for a ``main_path`` key that
  ``spawn.get_preparation_data()`` never gives, so each child imported the
  main module itself, as under ``spawn``), with the parent's ``sys.argv``
  (gh-144503). A forkserver child is now forked with what the main module
  set up at import: ``"inherit"`` and ``"reset"`` reach it if
  ``install()`` is called at import, not under ``if __name__ ==
  "__main__":``. ``"forward"`` makes it join either way.
- 3.14: ``QueueListener.start()`` raises ``RuntimeError`` when the listener
  has a thread already, and ``QueueListener`` is a context manager.
  :func:`restart_queue_listener` forgets the parent's thread first, on
  every version; from 3.14, :func:`forget_listener_thread` does so in every
  forked child in ``"inherit"`` and ``"reset"`` modes, so that the child's
  own ``start()`` works as it did before 3.14.
- 3.14: ``Logger.removeHandler()`` replaces ``logger.handlers`` with a new
  list instead of changing it in place (gh-79366), so that ``callHandlers``
  can walk it without a lock. The hooks copy the lists they walk either way;
  forwarding swaps whole lists too (see ``_forward``).
- 3.14: ``FileHandler`` and ``WatchedFileHandler`` report an error opening
  their file through ``handleError`` instead of raising from ``emit``;
  ``RotatingFileHandler`` never rolls over a named pipe; ``SysLogHandler``
  has a ``timeout``. Nothing here depends on them.
- 3.14: ``-X thread_inherit_context`` (default in free-threaded builds):
  :func:`fresh_context` keeps the listener thread out of its starter's
  ``contextvars``. ``warnings`` has a lock of its own, which
  ``warnings._filters_mutated()`` takes: the fork hooks call it only when
  our threads are the only others, and ``os.fork()`` takes the same lock
  for its own warning right after. With ``-X context_aware_warnings``, a
  thread inside ``catch_warnings()`` reads its own filters, not
  ``warnings.filters``: it may still see the fork warning that our filter
  silences elsewhere.
- 3.15: ``basicConfig(formatter=...)``, ``__repr__`` of ``Formatter`` and
  ``Filter``. Nothing here depends on them.
- 3.15: ``site`` reads ``<name>.start`` files of entry points (PEP 829) and
  deprecates ``import`` lines in ``.pth`` files: they still run, after every
  path line and without a warning, through 3.17; 3.18 ignores them; and they
  are skipped already when a ``.start`` file of the same name exists. The
  start-up hook of ``install(subprocesses=True)`` is such a line
  (``forksafe_logging.pth``, see ``_startup``). It ships no ``.start`` file
  yet: an entry point is always imported and called, and importing
  ``forksafe_logging`` in every interpreter that starts is too costly.
  Before 3.18 it needs a top-level module of its own.
- 3.14 only: ``with lock:`` lets an exception from a signal handler land
  between taking the lock and the block that gives it back (the
  ``__enter__`` call checks for pending signals once it returns), and the
  lock stays taken: measured, 733 of 400,000 entries under a 50 µs
  ``setitimer`` leaked on 3.14.10; none on 3.9, 3.12, 3.13 or 3.15.2.
  (``acquire()`` then ``try:`` leaks on every version.) A sender whose
  lock leaked that way blocked on it in every later logging call. The
  locks a sender's own calls take are re-entrant, and :func:`reclaim` gives
  one back where no call of the thread can be inside.
- The rest the library reads is unchanged from 3.13: ``logging._lock`` is a
  ``threading.RLock``, ``logging._at_fork_reinit_lock_weakset`` is a
  ``WeakSet``, ``threading._active`` a dict and ``threading._dangling`` a
  ``WeakSet``, ``multiprocessing.Queue._reset(after_fork=...)``, the text of
  the fork warning, and code objects untracked by the cycle collector.
"""

from __future__ import annotations

import logging
import logging.handlers
import select
import socket
import sys
import threading

# Not ``from typing import TYPE_CHECKING``: typing is a large module, and
# each module a process has imported makes its forks slower (a fork copies
# the page tables of all its memory), so the package does not import it at
# run time. mypy treats any name ``TYPE_CHECKING`` as true; every module of
# the package that needs names from typing imports them under it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

#: Why the listener cannot run in a process eventlet has patched.
GREEN_TOP = (
    "forksafe_logging cannot run its listener in a process that "
    "eventlet.monkey_patch() has patched: the listener needs a real thread "
    "and select.poll(), which eventlet replaces (its threads are greenthreads "
    "of one OS thread) or removes. Import forksafe_logging and call install() "
    "in the top process unpatched, and call eventlet.monkey_patch() in the "
    "child processes only, first thing (as gunicorn's eventlet worker does)"
)

if not hasattr(select, "poll"):
    # eventlet's monkey_patch() deletes it; every module that binds it would
    # fail with a bare AttributeError.
    raise ImportError(GREEN_TOP)


def green_patched() -> bool:
    """Whether eventlet has patched this process's threads (see :data:`GREEN_TOP`)."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is None:
        return False
    try:
        return bool(patcher.is_monkey_patched("thread"))
    except Exception:  # another eventlet than the one we know
        return False


def reclaim(lock: Any) -> None:
    """Give back a re-entrant lock that this thread holds though none of its calls is inside.

    For a caller that knows it is not inside its own critical section: a
    hold it finds is one that an exception from a signal handler cut off
    between the lock's ``__enter__`` and its block (3.14; see above).
    """
    if lock._is_owned():
        lock._release_save()


def logging_module_lock() -> Any:
    """``logging``'s module lock, looked up now.

    Every version from 3.9 to 3.15 calls it ``_lock``; 3.13 replaced the
    ``_acquireLock``/``_releaseLock`` helpers around it with
    ``_prepareFork``/``_afterFork`` and ``with _lock`` blocks, but the object
    is the same ``threading.RLock``. Looked up at each use, not once: billiard
    (Celery's pool) replaces it with a new lock in every process it starts.
    """
    return logging._lock  # type: ignore[attr-defined]


#: Whether our own locks (``threading.Lock()``) can be re-initialized in place:
#: not if gevent patched ``threading`` before this package was imported.
LOCKS_REINIT = hasattr(threading.Lock(), "_at_fork_reinit")

#: ``threading.Lock()`` and ``threading.RLock()`` types. Both have had
#: ``_at_fork_reinit()`` since 3.9, the oldest version we support.
LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading._PyRLock)  # type: ignore[attr-defined]

#: 3.12 made ``os.fork()`` warn (``DeprecationWarning``) when other threads run.
FORK_WARNS_ABOUT_THREADS = sys.version_info >= (3, 12)
#: 3.11 gave ``SysLogHandler`` a ``createSocket()`` that ``emit()`` calls when
#: ``self.socket`` is falsy, so a child can reconnect lazily. 3.9 and 3.10
#: create the socket once, in ``__init__``.
SYSLOG_RECONNECTS_LAZILY = hasattr(logging.handlers.SysLogHandler, "createSocket")


def reinit_lock(lock: object) -> None:
    """Make ``lock`` a fresh, unheld lock in a child, in place.

    ``_at_fork_reinit`` (3.9+) keeps the object identity, so every holder of a
    reference sees the new state; replacing the attribute would not.
    """
    reinit: Optional[Callable[[], None]] = getattr(lock, "_at_fork_reinit", None)
    if reinit is not None:
        reinit()


def threads(in_child: bool = False) -> List[threading.Thread]:
    """Every ``threading.Thread`` that was running, read without taking a lock.

    In the parent this reads ``threading._active`` (a plain dict on 3.9 to
    3.15) without taking ``threading._active_limbo_lock``: this runs inside an
    at-fork hook, where taking a lock another thread may hold is what we must
    not do, and copying a dict is atomic under the GIL.

    In a child, ``threading``'s own at-fork hook (registered before ours) has
    already dropped the parent's threads from ``_active``; their objects are
    still in the ``threading._dangling`` weak set (3.9 to 3.15), which only
    this one thread can change now.
    """
    if in_child:
        return list(threading._dangling)  # type: ignore[attr-defined]
    active: Dict[int, threading.Thread] = threading._active  # type: ignore[attr-defined]
    return list(active.values())


def thread_targets(in_child: bool = False) -> List[object]:
    """The ``target`` of every thread of :func:`threads`.

    ``Thread._target`` is deleted when ``run()`` returns, hence the ``getattr``.
    """
    return [getattr(t, "_target", None) for t in threads(in_child)]


def stdlib_reinits_lock(handler: logging.Handler) -> bool:
    """Whether ``logging``'s own child hook re-initializes ``handler``'s lock.

    ``Handler.createLock`` registers the handler in
    ``logging._at_fork_reinit_lock_weakset`` (3.9 to 3.15); a class that
    overrides ``createLock`` without calling it is not there. Membership is
    read without ``logging``'s module lock, which only writers take.
    """
    registered: Any = getattr(logging, "_at_fork_reinit_lock_weakset", ())
    return handler in registered


def queue_handler_listener(handler: logging.Handler) -> Optional[object]:
    """The listener that 3.12+ ``dictConfig`` attaches to a ``QueueHandler``."""
    return getattr(handler, "listener", None)


#: 3.14: ``QueueListener.start()`` refuses a listener whose ``_thread`` is
#: set, and ``stop()`` (3.12.3+, gh-114706) does nothing when it is None.
LISTENER_REFUSES_RESTART = sys.version_info >= (3, 14)


def forget_listener_thread(listener: logging.handlers.QueueListener) -> None:
    """In a child, let a ``QueueListener`` know that its thread stayed in the parent.

    From 3.14 only: there, a child's ``start()`` would otherwise raise
    ``RuntimeError``, and ``stop()`` would put a sentinel on the queue (on a
    ``multiprocessing`` queue, one that stops the *parent's* thread). Before
    3.14, ``start()`` works anyway and 3.9 to 3.12.2's ``stop()`` needs
    a thread to join, so the attribute is left as it is.
    """
    if LISTENER_REFUSES_RESTART:
        listener._thread = None  # type: ignore[attr-defined]


def fresh_context() -> Dict[str, Any]:
    """Keyword arguments for a ``threading.Thread`` of ours: an empty context.

    3.14's ``-X thread_inherit_context`` (on by default in free-threaded
    builds) starts a thread with a copy of the starting thread's
    ``contextvars``: the listener would dispatch every child's record with
    the values of whatever request happened to call ``install()``, for the
    filters that read them. An empty one, as every thread had before.
    """
    if getattr(sys.flags, "thread_inherit_context", 0):
        import contextvars  # a C module; only where the flag exists

        return {"context": contextvars.Context()}
    return {}


def restart_queue_listener(listener: logging.handlers.QueueListener) -> None:
    """Start, in a child, a ``QueueListener`` whose thread stayed in the parent.

    3.14 made ``start()`` refuse a listener that has a thread already
    (``RuntimeError: Listener already started``); before, it started a
    second one. The inherited ``_thread`` (the same attribute 3.9 to 3.15)
    names a thread that does not exist here: forgotten first.
    """
    listener._thread = None  # type: ignore[attr-defined]
    listener.start()


def reset_multiprocessing_queue(q: Any) -> None:
    """Forget an inherited ``multiprocessing.Queue``'s feeder thread and buffer.

    ``multiprocessing`` does this itself in children it starts (through
    ``util._run_after_forkers``), but not after a plain ``os.fork()``. We call
    ``_reset(after_fork=True)`` (same signature 3.9 to 3.15) rather than
    ``_after_fork()``, which logs through ``multiprocessing.util.debug`` and an
    at-fork hook must not log.
    """
    q._reset(after_fork=True)


def drop_syslog_stream_socket(handler: Any) -> None:
    """Give a child its own connection instead of the parent's stream socket.

    The inherited socket object is left alone (closing it in the child would
    only close the child's descriptor, but there is nothing to gain).
    """
    if SYSLOG_RECONNECTS_LAZILY:
        handler.socket = None
        return
    # 3.9/3.10: no lazy reconnect in emit(), so connect now, as __init__ does.
    address = handler.address
    if isinstance(address, str):
        handler._connect_unixsocket(address)
    else:
        handler.socket = socket.create_connection(address)


def start_method() -> Tuple[str, bool]:
    """``multiprocessing``'s start method in this process, and whether it is the default.

    Read without fixing it: ``get_start_method()`` without ``allow_none``
    would make the default final, and a later ``set_start_method()`` of the
    program would fail. The default depends on the version and the platform:
    ``fork`` on Linux up to 3.13; ``forkserver`` on POSIX systems other than
    macOS from 3.14 (gh-84559), or ``spawn`` where 3.14 finds no writable
    temporary directory for the forkserver's socket (gh-155717, in later 3.14
    releases); ``spawn`` on macOS since 3.8. Imports ``multiprocessing``:
    for the report, never for a fork hook.
    """
    import multiprocessing.context

    chosen = multiprocessing.get_start_method(allow_none=True)
    if chosen is not None:
        return chosen, False
    # A property on 3.14 (the default is decided on first use), an attribute
    # before; a concrete context either way.
    default: Any = multiprocessing.context._default_context._default_context  # type: ignore[attr-defined]
    return default.get_start_method(), True


def being_spawned_by_multiprocessing() -> bool:
    """Whether ``multiprocessing`` is setting this process up as a spawn/forkserver child.

    ``spawn._main`` sets ``current_process()._inheriting`` while it imports
    the parent's main module and unpickles the process object (3.9 to 3.13).
    """
    process = sys.modules.get("multiprocessing.process")
    # Not imported: then multiprocessing is not starting this process.
    return process is not None and bool(getattr(process.current_process(), "_inheriting", False))


def multiprocessing_parent_pid() -> Optional[int]:
    """The pid of the process that had ``multiprocessing`` start this one, if it did.

    ``multiprocessing.parent_process()`` (3.8+): the process that asked for
    this one, also under ``forkserver``, where the server forked it.
    """
    process = sys.modules.get("multiprocessing.process")
    if process is None:
        return None
    parent = process.parent_process()
    return None if parent is None else parent.pid


def running_dict_config() -> Optional[Tuple[Any, Optional[str]]]:
    """The ``dictConfig`` call that is making a handler now: its ``handlers`` mapping and
    the name of the handler being made (``None`` if not found).

    ``dictConfig`` builds handlers in name order and keeps each one only in
    this mapping (``logging._handlers`` holds them weakly) until it returns,
    so a handler that names others later in the order must hold on to the
    mapping itself. 3.12 added this for ``QueueHandler`` subclasses; our
    handler is not one, so 3.9 to 3.13 all go through here. The configurator
    is the ``self`` of a frame above us (``configure_handler``).

    The name is set only after the handler is made (``handler.name = name``),
    too late to refuse a configuration before the handler starts a listener.
    ``configure()`` passes ``handlers[name]`` to ``configure_handler(self,
    config)``, and a ``ConvertingDict`` stores what it converts back under
    its key, so the ``config`` of that frame is the very object the mapping
    holds under the name (3.9 to 3.13, checked in each one's source).
    """
    import logging.config

    frame = sys._getframe(1)
    for _ in range(16):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, logging.config.DictConfigurator):
            config = getattr(owner, "config", None)
            handlers = config.get("handlers") if config is not None else None
            if handlers is None:
                return None
            return handlers, _name_of(handlers, frame.f_locals.get("config"))
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _name_of(handlers: Any, made: object) -> Optional[str]:
    if made is None:
        return None
    # dict's own methods: ConvertingDict's would convert every entry on the way.
    for name, value in dict.items(handlers):
        if value is made:
            return name  # type: ignore[no-any-return]
    return None
