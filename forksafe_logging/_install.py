"""``install()``, ``uninstall()``, ``is_installed()``, ``attach()``: the switches."""

from __future__ import annotations

import math
from collections.abc import Mapping

from forksafe_logging import (
    _atfork,
    _forward,
    _join,
    _server,
    _settings,
    _tree,
    _turns,
)
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Literal, Optional

    from forksafe_logging._settings import ChildConfig

DEFAULT_FORK_TIMEOUT = _settings.DEFAULT_FORK_TIMEOUT


def install(
    *,
    child: Literal["forward", "inherit", "reset"] = "forward",
    config: Optional[ChildConfig] = None,
    fork_timeout: float = DEFAULT_FORK_TIMEOUT,
    warn_held_locks: bool = False,
    order_wait: float = _turns.ORDER_WAIT,
    subprocesses: bool = False,
) -> None:
    """Make the standard ``logging`` module safe across processes.

    From this call on, every fork (``os.fork()``, ``multiprocessing`` with the
    ``fork`` start method, ``concurrent.futures``, servers that fork workers)
    leaves the child with usable locks and queues for everything the logging
    configuration reaches, whatever the parent's other threads were doing.
    Handlers and loggers added later are covered too.

    Calling it again is harmless: the hooks are registered once per
    interpreter, and the options of the latest call are the ones in force.
    It is thread-safe and may be called before or after logging is
    configured.

    Args:
        child: What another process of the tree does with its logging.
            ``"forward"`` (the default): every process started from here,
            by ``fork``, ``spawn`` or ``forkserver``, sends its records to a
            listener thread in this process, which hands them to the handlers
            configured here, as if they had been logged here. (A program
            started with :mod:`subprocess` joins only if it calls
            :func:`attach`; calling ``install()`` there makes it the top of
            a tree of its own.)
            ``"inherit"``: a forked child keeps the handlers it inherited
            (their locks and queues made usable, an inherited
            ``QueueListener`` restarted on first use, nothing the parent
            buffered written twice). ``"reset"``: a forked child drops them,
            closing nothing the parent still uses, and applies ``config``.
            Both act on forked children only. ``multiprocessing`` and
            ``concurrent.futures`` start theirs with ``forkserver`` by
            default on Linux from Python 3.14 (``fork`` before). From
            3.14, such a child is forked from a server process that
            imported the main module, so it gets the mode only if the main
            module calls ``install()`` when imported, not under
            ``if __name__ == "__main__":``. A ``spawn`` child, or a
            ``forkserver`` child up to 3.13, is not forked from anything
            that ran the main module. :func:`~forksafe_logging.diagnose`
            says which start method a program uses.
        config: Only with ``child="reset"``: a :func:`logging.config.dictConfig`
            dictionary, or a callable that configures logging, applied in each
            forked child. ``None`` leaves the child without handlers.
        fork_timeout: The most, in seconds, one fork waits in total for locks
            that other threads hold. A lock still held then is left alone in
            the parent and replaced in the child, so a stuck handler delays a
            fork by at most this much.
        warn_held_locks: Issue a :class:`~forksafe_logging.HeldLockWarning`
            in the parent, right after each fork that happened while another
            thread held a lock of the logging configuration or of structlog
            (a lock the fork waits for counts if still held after
            ``fork_timeout``), naming the lock and its holder. For finding
            out which threads log while the program forks; it costs a look
            at the configuration per fork.
        order_wait: With ``child="forward"``: the most, in seconds, that a
            record of this process waits for the listener to write what
            other processes sent before it, so that the file tells what
            happened in the order it happened (see "Guarantees and failure
            modes"). It waits only while another process's records are on
            their way; when the children log faster than this process can
            write, each of its records waits for the backlog ahead of it.
            ``0``: never wait; this process's records may then be written
            before records its children logged earlier.
        subprocesses: With ``child="forward"``: ``True`` makes every Python
            program started below this one, by any means (:mod:`subprocess`,
            a reloader, pytest-xdist), join the tree as it starts, before its
            code logs, with this process's logger levels as they are then
            (it asks the listener): a start-up
            hook installed with the package (``forksafe_logging.pth``) acts
            on the environment variable ``FORKSAFE_LOGGING_SUBPROCESSES=1``,
            which this sets. Setting that variable for a program that does
            not call ``install()`` makes it call ``install(subprocesses=True)``
            as it starts. Programs run with another interpreter, or one
            without this package, with ``-S`` or ``-I``, and programs that
            are not Python, are untouched. See "Programs that join as they
            start" in the docs for what this trusts.

    Raises:
        ValueError: ``child`` is not a known mode, ``config`` is given with
            a mode other than ``"reset"``, ``subprocesses=True`` with a mode
            other than ``"forward"``, or ``fork_timeout`` is negative,
            infinite or NaN, or ``order_wait`` is negative, infinite or NaN.
        TypeError: ``config`` is neither a mapping nor a callable,
            ``fork_timeout`` or ``order_wait`` is not a number, or
            ``warn_held_locks`` or ``subprocesses`` not a bool.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       ``child="forward"`` is new, and the default.
    .. versionchanged:: 0.3.0
       ``warn_held_locks`` is new.
    .. versionchanged:: 0.4.0
       ``order_wait`` and ``subprocesses`` are new.
    """
    settings = _validate(child, config, fork_timeout, warn_held_locks)
    wait = _seconds("order_wait", order_wait)
    if not isinstance(subprocesses, bool):
        raise TypeError("subprocesses must be True or False; got %r" % (subprocesses,))
    if subprocesses and child != "forward":
        raise ValueError(
            "subprocesses=True makes started programs send their records to this "
            "process's listener: only with child='forward'; got child=%r" % (child,)
        )
    # What the hooks may need, imported now: never inside a fork hook, and
    # not at all by programs that do not need it (every module a process
    # has imported makes each of its forks slower).
    if warn_held_locks:
        from forksafe_logging import _held  # noqa: F401
    if isinstance(config, Mapping):
        import logging.config  # noqa: F401
    with state.install_lock:
        # In a forked child that has not used logging yet: first finish what
        # the fork began, whatever the mode asked for now (see _forward).
        _forward.rewire()
        _atfork.register()
        if settings.child == "forward":
            if _tree.is_descendant():
                _join.become_descendant(settings)
                return
            started = _server.current() is None
            server = _tree.start_listener()
            if started:
                state.started_listener = server
            server.turns.set_order_wait(wait)
            _join.advertise()
            _forward.prepare_forwarder()
        else:
            _join.withdraw()
        _join.switch_subprocesses(subprocesses)
        state.settings = settings


def attach() -> None:
    """Join the process tree of the program that started this one.

    For Python programs started with :mod:`subprocess` (or any other way
    than ``multiprocessing``) by a program that called :func:`install`:
    they inherit its listener's address in the environment variable
    ``FORKSAFE_LOGGING_LISTENER``, and this call makes them forward every
    record there, as forked and spawned children do by themselves. Call it
    once at start-up; before or after configuring logging, or calling
    :func:`install`, makes no difference. It keeps this program's own logger
    levels: set them as the records it should send require. In a process
    that already belongs to a tree it does nothing.

    Raises:
        RuntimeError: There is no such variable (the program was not started
            by one that called :func:`install`, or the environment was not
            passed on).

    .. versionadded:: 0.2.0
    """
    if _tree.tree() is not None:
        return
    # The value this process started with: its own install() or QueueHandler
    # may have published its own listener since.
    where = _tree.from_environment(inherited=True)
    if where is None:
        raise RuntimeError(
            "%s is not set: this process was not started by a program that called "
            "forksafe_logging.install(), or the environment was not passed on" % _tree.ENV_VAR
        )
    _join.join_tree(where)


def uninstall() -> None:
    """Switch the library off, leaving logging as it was before :func:`install`.

    In the top process of a tree, the listener handles every record already
    sent to it, the handlers are flushed, and it stops. In a process that
    was forwarding, its own handlers and filters come back. The at-fork
    hooks stay registered (``os.register_at_fork`` cannot unregister) and
    do nothing. Calling it when not installed is harmless.

    .. versionadded:: 0.1.0
    """
    with state.install_lock:
        was = state.settings
        state.settings = None
        # Everything in the ledger, in its order: what is still ours goes
        # back to what it was (see _ledger and docs/architecture.md).
        from forksafe_logging import _ledger  # for uninstall() only: a module less in every process

        _ledger.undo_all(installed=was is not None)


def reset() -> None:
    """:func:`uninstall`, then stop a listener a ``QueueHandler`` started, and unpublish it.

    For the tests, between two of them: the process is then as if the
    package had only been imported (``_state.departures()`` is empty).
    """
    uninstall()
    _server.stop(0)
    _tree.unpublish()


def is_installed() -> bool:
    """Whether :func:`install` is in force in this process.

    .. versionadded:: 0.1.0
    """
    return state.settings is not None


def _validate(
    child: object, config: object, fork_timeout: object, warn_held_locks: object
) -> _settings.Settings:
    _settings.check_child(child)
    if config is not None:
        if child != "reset":
            raise ValueError(
                "config= is applied only in child='reset' mode; got child=%r. "
                "Pass child='reset' too, or drop config=" % (child,)
            )
        if not isinstance(config, Mapping) and not callable(config):
            raise TypeError(
                "config must be a logging.config.dictConfig dictionary or a callable "
                "that configures logging; got %s" % (type(config).__name__,)
            )
    fork_timeout = _seconds("fork_timeout", fork_timeout)
    if not isinstance(warn_held_locks, bool):
        raise TypeError("warn_held_locks must be True or False; got %r" % (warn_held_locks,))
    return _settings.Settings(child, config, fork_timeout, warn_held_locks)  # type: ignore[arg-type]


def _seconds(name: str, value: object) -> float:
    """``value`` as a finite number of seconds >= 0, or the error that says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds; got %r" % (name, value))
    if not math.isfinite(value) or value < 0:
        raise ValueError("%s must be a finite number of seconds >= 0; got %r" % (name, value))
    return float(value)
