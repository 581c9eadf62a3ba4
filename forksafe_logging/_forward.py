"""``child="forward"``: a process of the tree sends its records to the top's listener.

In such a process every logger loses its handlers and filters, and a single
forwarder sits where a record's walk up the logger tree ends (the root, and
every logger with ``propagate = False``). So each record is sent exactly
once, and the top process dispatches it through its own logger tree, with
the levels, filters, handlers and ``propagate`` configured there.

Spawn and forkserver children find their way by themselves: ``install()``
puts an :class:`_Attach` into ``multiprocessing``'s per-process config, which
is pickled into every child it starts. Unpickling it in the child, which
happens after the child has imported the parent's main module (and run any
logging set-up at module level there), calls :func:`attach_spawned`.
"""

from __future__ import annotations

import logging
import multiprocessing.process
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from forksafe_logging import _reach

#: The key in ``multiprocessing.current_process()._config``.
CONFIG_KEY = "forksafe_logging"


def forward_tree() -> List[Tuple[logging.Logger, List[Any], List[Any]]]:
    """Replace this process's handlers and logger filters with forwarders.

    Returns what was taken, so that ``uninstall()`` can put it back.
    """
    forwarder = _new_forwarder()
    taken = []
    for logger in _reach.loggers():
        taken.append((logger, logger.handlers[:], logger.filters[:]))
        logger.handlers[:] = _forwarding_handlers(logger, forwarder)
        del logger.filters[:]
    return taken


def _forwarding_handlers(logger: logging.Logger, forwarder: logging.Handler) -> List[Any]:
    """A forwarder where a record's walk up the tree ends: once per record, always."""
    return [forwarder] if logger is logging.root or not logger.propagate else []


def abandon_and_forward() -> List[Tuple[logging.Logger, List[Any], List[Any]]]:
    """In a forked child: forward, leaving the inherited handlers untouched forever.

    The inherited handlers are the parent's; the child will not use them. So
    their handler lists are abandoned whole (never freed, so no handler is
    ever deallocated, flushed or closed here: whatever a thread of the parent
    had half-written stays unwritten in the child), and at exit
    ``logging.shutdown()`` sees only the handlers made after the fork.
    Touching nothing else is what keeps this cheap: after a fork every
    object written to costs a page fault (about 3 us here), and even freeing
    a handler's weak reference writes to the handler.
    """
    from forksafe_logging import _streams

    _shutdown_only_handlers_made_from_now_on()
    # Made in the parent (prepare_forwarder): a handler made here would cost
    # about 100 us of faults in logging's registries.
    forwarder = _forwarder if _forwarder is not None else _new_forwarder()
    taken = []
    for logger in _reach.loggers():
        taken.append((logger, logger.handlers, logger.filters))
        logger.handlers = _forwarding_handlers(logger, forwarder)
        logger.filters = []
    # One never-freed list keeps every inherited handler list alive.
    _streams.abandon(list(taken))
    return taken


#: The forwarder forked children put on their loggers, made before the fork.
_forwarder: Optional[logging.Handler] = None


def _new_forwarder() -> logging.Handler:
    from forksafe_logging.handlers import tree_forwarder

    return tree_forwarder()


def prepare_forwarder() -> None:
    """Make the forwarder that forked children will use, while it is cheap."""
    global _forwarder
    if _forwarder is None:
        _forwarder = _new_forwarder()


#: The inherited ``logging._handlerList``, kept alive, never walked again.
_inherited_handler_list: Optional[List[Any]] = None


def _shutdown_only_handlers_made_from_now_on() -> None:
    """Give ``logging`` a new, empty list of handlers to shut down.

    ``logging.shutdown()`` (at exit, and from ``dictConfig`` and ``fileConfig``,
    which shut down every handler in the list before configuring) would
    flush and close the inherited handlers: write what a thread of the parent
    had buffered, a second time, or block for ever on a stream whose lock
    that thread held at the fork. Code that looks the list up by name
    (``dictConfig``, the stdlib's handler registration, gevent's
    ``patch_all()``) now finds only handlers made in this process. A call of
    ``logging.shutdown()`` without arguments, as at exit, would still use the
    old list, through its default argument: that is rebound too.
    """
    global _inherited_handler_list
    _inherited_handler_list = logging._handlerList  # type: ignore[attr-defined]
    fresh: List[Any] = []
    logging._handlerList = fresh  # type: ignore[attr-defined]
    logging.shutdown.__defaults__ = (fresh,)


def restore(taken: List[Tuple[logging.Logger, List[Any], List[Any]]]) -> None:
    """Undo :func:`forward_tree`."""
    for logger, handlers, filters in taken:
        logger.handlers[:] = handlers
        logger.filters[:] = filters


def levels() -> Tuple[Dict[str, int], int]:
    """The levels set in this process's logger tree, and ``logging.disable``'s level."""
    found = {
        logger.name: logger.level for logger in _reach.loggers() if logger.level != logging.NOTSET
    }
    found[""] = logging.root.level
    return found, logging.Logger.manager.disable


def apply_levels(found: Dict[str, int], disable: int) -> None:
    for name, level in found.items():
        (logging.getLogger(name) if name else logging.root).setLevel(level)
    logging.disable(disable)


class _Attach:
    """Pickled into spawn/forkserver children; unpickled, it attaches them."""

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
        from forksafe_logging import _channel

        # Runs in the parent as the child starts: the levels are those of now.
        found, disable = levels()
        return attach_spawned, (_channel.endpoint(), found, disable)


def attach_spawned(endpoint: Any, found: Dict[str, int], disable: int) -> _Attach:
    """In a spawned child: take the parent's levels and forward every record."""
    from forksafe_logging import _install

    if endpoint is not None:
        apply_levels(found, disable)
        _install.join_tree(tuple(endpoint))
    return _Attach()


def _process_modules() -> List[Any]:
    """``multiprocessing.process``, and billiard's copy of it if it is imported.

    billiard (Celery's pool) keeps a process object of its own, whose config
    its spawn children unpickle the same way. It is not imported here: a
    program that imports it after ``install()`` attaches its billiard spawn
    workers with ``attach()``.
    """
    found: List[Any] = [multiprocessing.process]
    billiard = sys.modules.get("billiard.process")
    if billiard is not None:
        found.append(billiard)
    return found


def advertise() -> None:
    """Make children that ``multiprocessing`` starts from now on attach themselves."""
    for module in _process_modules():
        module.current_process()._config[CONFIG_KEY] = _Attach()


def withdraw() -> None:
    for module in _process_modules():
        module.current_process()._config.pop(CONFIG_KEY, None)
