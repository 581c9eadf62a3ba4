"""``child="forward"``: a process of the tree sends its records to the top's listener.

In such a process every logger loses its handlers and filters, and a single
forwarder sits where a record's walk up the logger tree ends (the root, and
every logger with ``propagate = False``). So each record is sent exactly
once, and the top process dispatches it through its own logger tree, with
the levels, filters, handlers and ``propagate`` configured there.

A forked child does this on its first use of logging, not in the fork hook.
Taking the inherited handlers off every logger (:func:`abandon_and_forward`)
writes to each logger, and after a fork every page written to costs a page
fault (about 3 us here), which for a child that never logs (one that execs,
or exits at once) is all cost. So the hook (``_atfork.after_fork_in_child``)
only arms two switches, made in the parent:
``Logger.callHandlers``, which every record reaches before any handler, and
``logging._lock`` (a :class:`_RewireOnFirstUse`), which every change to the
configuration takes before it looks at a handler list: adding or removing a
handler, making one, ``getLogger()``, ``setLevel()``, ``basicConfig()``,
``dictConfig()``, ``fileConfig()``. Whichever fires first rewires the loggers
(:func:`rewire`) and puts both back.

Spawn and forkserver children find their way by themselves: see
:mod:`forksafe_logging._spawned`.
"""

from __future__ import annotations

import logging

from forksafe_logging import _reach, _streams
from forksafe_logging._state import state
from forksafe_logging.handlers import tree_forwarder

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, List, Optional, Tuple


def forward_tree() -> List[Tuple[logging.Logger, List[Any], List[Any]]]:
    """Replace this process's handlers and logger filters with forwarders.

    Returns what was taken, so that ``uninstall()`` can put it back.
    """
    handler = forwarder()
    taken = []
    for logger in _reach.loggers():
        taken.append((logger, logger.handlers[:], logger.filters[:]))
        # New lists, not changed in place: from 3.14 another thread's
        # callHandlers() walks a logger's list without the module lock,
        # counting on every change being a new list (as removeHandler does).
        logger.handlers = _forwarding_handlers(logger, handler)
        logger.filters = []
    return taken


def _forwarding_handlers(logger: logging.Logger, handler: logging.Handler) -> List[Any]:
    """The forwarder where a record's walk up the tree ends: once per record, always."""
    return [handler] if logger is logging.root or not logger.propagate else []


def rewire_in_fork_hook(lock: Any) -> None:
    """In a forked child's hook, when the switches cannot be armed: rewire now.

    When a logger class dispatches records its own way (it might never reach
    ``Logger.callHandlers``), or when the parent was itself armed and never
    used logging (uWSGI runs no "before" hook, which would have taken the
    lock and fired the switch). ``lock`` is ``logging._lock`` as the hook
    found it.
    """
    switch = _switch
    if switch.armed:
        if lock is switch:
            lock = switch.real
        _disarm(switch)
    with lock:
        _rewire_locked()


class _RewireOnFirstUse:
    """``logging._lock`` in a forked child until the child first uses logging.

    Forwards everything to the real lock; the first acquisition rewires the
    loggers first (:func:`rewire`) and puts the real lock back.

    It also holds everything else the fork hook reads or writes to arm the
    switches: after a fork, each object touched costs a page fault, so the
    fewer, the better.
    """

    __slots__ = ("armed", "call_handlers", "inherited_handlers", "next_handlers", "real")

    def __init__(self) -> None:
        #: Armed in this forked child, until it fires.
        self.armed = False
        self.real: Any = None
        self.call_handlers: Any = None
        #: The empty list of handlers a forked child gives ``logging`` (and
        #: ``shutdown()``'s default argument), made in the parent (renewed
        #: by ``_atfork.before_fork`` when needed).
        self.next_handlers: Tuple[List[Any]] = ([],)
        #: The inherited ``logging._handlerList``, kept alive, never walked again.
        self.inherited_handlers: Optional[List[Any]] = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and timeout < 0:
            rewire()
            return bool(self.real.acquire())
        # A bounded attempt stays bounded: the lock first, then the rewiring
        # under it (logging's lock is an RLock: rewire() takes it again).
        if not self.real.acquire(blocking, timeout):
            return False
        try:
            rewire()
        except BaseException:
            self.real.release()
            raise
        return True

    def release(self) -> None:
        self.real.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.real.release()

    def __getattr__(self, name: str) -> Any:
        # _at_fork_reinit, _is_owned, locked...: the real lock's, untouched.
        return getattr(self.real, name)


#: Armed in a forked child; the one object of its kind in a process.
_switch = _RewireOnFirstUse()


def _rewire_then_call_handlers(logger: logging.Logger, record: logging.LogRecord) -> None:
    armed = _switch.armed
    rewire()
    call_handlers = _switch.call_handlers if armed else logging.Logger.callHandlers
    call_handlers(logger, record)


def rewire() -> None:
    """Take the inherited handlers off the loggers now, if a fork left that pending.

    Safe to call from any thread, at any time, with logging's module lock
    held or not. ``install()``, ``attach()`` and ``uninstall()`` call it in a
    child before they look at the loggers.
    """
    switch = _switch
    if not switch.armed:
        return
    with switch.real:
        if not switch.armed:
            return  # another thread did it while we waited
        _disarm(switch)
        _rewire_locked()


def _rewire_locked() -> None:
    """Rewire; the caller holds logging's module lock, which guards the dict of loggers."""
    if not state.undo:
        state.undo[:] = abandon_and_forward()


def _disarm(switch: _RewireOnFirstUse) -> None:
    switch.armed = False
    if logging._lock is switch:  # type: ignore[attr-defined]
        logging._lock = switch.real  # type: ignore[attr-defined]
    if vars(logging.Logger).get("callHandlers") is _rewire_then_call_handlers:
        logging.Logger.callHandlers = switch.call_handlers  # type: ignore[method-assign]


def disarm() -> None:
    """Forget a pending rewiring: the child keeps what it inherited (for ``uninstall()``)."""
    switch = _switch
    if switch.armed:
        with switch.real:
            if switch.armed:
                _disarm(switch)


def give_back_handler_list() -> None:
    """Give logging back the list of handlers this forked child inherited (for ``uninstall()``).

    The fork hook gave the child a new, empty ``logging._handlerList`` so that
    ``shutdown()`` at exit never touched the parent's handlers. Switched off,
    the child is as without the library: at exit it flushes and closes what
    it inherited, then (first) what it made since the fork.
    """
    switch = _switch
    inherited = switch.inherited_handlers
    if inherited is None:
        return
    switch.inherited_handlers = None
    with logging._lock:  # type: ignore[attr-defined]
        current = logging._handlerList  # type: ignore[attr-defined]
        if current is inherited:
            return
        inherited.extend(current)
        logging._handlerList = inherited  # type: ignore[attr-defined]
        defaults = logging.shutdown.__defaults__
        if defaults is not None and defaults[0] is current:
            logging.shutdown.__defaults__ = (inherited,)


def abandon_and_forward() -> List[Tuple[logging.Logger, List[Any], List[Any]]]:
    """Forward, leaving the inherited handlers untouched forever.

    The inherited handlers are the parent's; the child will not use them. So
    their handler lists are abandoned whole (never freed, so no handler is
    ever deallocated, flushed or closed here: whatever a thread of the parent
    had half-written stays unwritten in the child). A logger that has
    neither handlers nor filters, and needs no forwarder, is left as it is.
    Called with logging's module lock held, which guards the dict of loggers.
    """
    # Made in the parent (prepare_forwarder): a handler made here would cost
    # about 100 us of faults in logging's registries.
    prepared = state.pinned
    handler = forwarder()
    taken = []
    for logger in _reach.loggers():
        handlers = logger.handlers
        filters = logger.filters
        forwarding = _forwarding_handlers(logger, handler)
        if not (handlers or filters or forwarding):
            continue
        taken.append((logger, handlers, filters))
        logger.handlers = forwarding
        if filters:
            logger.filters = []
    if prepared:
        # Never freed: the list was made unfreeable in the parent, where that is cheap.
        _keep_forever.append(taken)
    else:
        _streams.abandon(taken)
    return taken


#: What forwarding children abandon (see :func:`prepare_forwarder`).
_keep_forever: List[Any] = []


def forwarder() -> logging.Handler:
    """This process's one forwarder, made on first use: logging's and structlog's records share it.

    A forked child has the one its parent made before the fork
    (:func:`prepare_forwarder`).
    """
    if state.forwarder is None:
        state.forwarder = tree_forwarder()
    return state.forwarder


def prepare_forwarder() -> None:
    """Make, while it is cheap, what forked children will need to forward."""
    forwarder()
    if not state.pinned:
        # The list, and what a child appends to it, outlive even interpreter
        # shutdown in every process of the tree. Apart from the forwarder,
        # which a process that joined a tree may have made already.
        _streams.abandon(_keep_forever)
        state.pinned = True


def restore(taken: List[Tuple[logging.Logger, List[Any], List[Any]]]) -> None:
    """Undo :func:`forward_tree`."""
    for logger, handlers, filters in taken:
        logger.handlers = handlers  # new lists: see forward_tree()
        logger.filters = filters
