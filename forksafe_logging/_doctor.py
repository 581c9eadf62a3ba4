"""The fork-hazard report: what a fork would copy unsafely, and what ``install()`` does about it.

:func:`diagnose` looks at the logging configuration through the same walk the
at-fork hooks make (:func:`forksafe_logging._reach.collect`), so the report
names what the hooks act on. Like the hooks' walk, it reads lists and dicts
only: it takes no lock, starts nothing, and changes nothing, so it can run in
a program at any moment, even while other threads log.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Dict, Iterable, List, Literal, Optional

from forksafe_logging import (
    _compat,
    _detect,
    _reach,
    _settings,
)
from forksafe_logging._diagnosis import Diagnosis
from forksafe_logging._hazard import KINDS, Hazard, fill
from forksafe_logging._state import state

__all__ = ["KINDS", "Diagnosis", "Hazard", "diagnose", "examine", "fill"]


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
    settings = state.settings
    if child is None:
        child = settings.child if settings is not None else "forward"
    else:
        _settings.check_child(child)
    fork_timeout = settings.fork_timeout if settings is not None else _settings.DEFAULT_FORK_TIMEOUT
    owners: Dict[int, List[Any]] = {}
    reach = _reach.collect(owners=owners)
    look = _detect.Look(child, fork_timeout, owners)
    hazards: List[Hazard] = []
    for q in reach.queues:
        hazards.extend(_detect.queue_hazards(look, q, reach.listeners))
    for listener in reach.listeners:
        hazards.extend(_detect.listener_hazards(look, listener))
    for handler in reach.custom:
        hazards.extend(_detect.handler_lock_hazards(look, handler))
    for handler, lock in reach.extra_locks:
        hazards.append(_detect.extra_lock_hazard(look, handler, lock))
    for handler in reach.handlers:
        hazards.extend(_detect.stream_hazards(look, handler))
    for handler in reach.buffering:
        hazards.append(_detect.buffer_hazard(look, handler))
    for handler in reach.sockets:
        hazards.append(_detect.socket_hazard(look, handler))
    hazards.extend(_detect.structlog_hazards(look))
    forking = forking if forking is not None else threading.current_thread()
    hazards.extend(_detect.thread_hazards(look, reach.listeners, forking, set(ignore)))
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
