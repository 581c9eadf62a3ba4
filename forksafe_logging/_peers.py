"""Other libraries that hook ``logging`` in every process: each record reaches them once.

Sentry's logging integration (sentry-sdk 2) wraps ``Logger.callHandlers``:
after the handlers, it turns the record into an event or a breadcrumb of the
process where the call happened. In a child whose Sentry is active (inherited
through a fork, or initialized there), that happens in the child, with the
child's scope and the live exception; then the record is forwarded, and the
top's ``callHandlers`` would report it a second time. So a sender tells the
listener which of its records its own Sentry has seen (a route of its own,
:data:`SEEN_BY_SENTRY`), and the top hands those to its handlers through
:func:`handle`, the standard library's walk, which no ``callHandlers``
wrapper sees. A child without an active Sentry sends as usual, and the
top's Sentry reports its records, once.
"""

from __future__ import annotations

import logging
import os
import sys

from forksafe_logging._state import state

#: The route of a record that Sentry's logging integration has seen in the
#: process that logged it. Routes are otherwise the names of handlers, which
#: no configuration gives a NUL byte.
SEEN_BY_SENTRY = "\0sentry"

#: How long a sender's exit waits at most for its Sentry to send what it
#: reported (sentry-sdk's own default for its exit).
SENTRY_FLUSH_TIMEOUT = 2.0

_modules = sys.modules


def mark_seen_by_sentry() -> str:
    """The route of a record this process's Sentry reports; its exit will flush Sentry."""
    state.sentry_marked_pid = os.getpid()
    return SEEN_BY_SENTRY


def flush_sentry() -> None:
    """At a sender's exit: let its Sentry send the events of the records it marked.

    The top no longer reports those records, and a ``multiprocessing`` child
    ends with ``os._exit()``, where Sentry's own exit hook never runs: what
    its transport still held would be lost. Waits
    :data:`SENTRY_FLUSH_TIMEOUT` seconds at most.
    """
    if state.sentry_marked_pid != os.getpid():
        return
    sentry = _modules.get("sentry_sdk")
    if sentry is None:
        return
    try:
        sentry.flush(timeout=SENTRY_FLUSH_TIMEOUT)
    except Exception:  # never into the program's exit
        pass


def seen_by_sentry() -> bool:
    """Whether Sentry's logging integration sees, in this process, what is logged now."""
    sentry = _modules.get("sentry_sdk")
    if sentry is None:  # nearly always: a dictionary lookup per record
        return False
    try:
        client = sentry.get_client()
        return bool(client.is_active() and client.get_integration("logging") is not None)
    except Exception:  # sentry-sdk 1 (no get_client), or a client in a bad state
        return False


def _logging_defines(cls: type, name: str) -> bool:
    """Whether ``cls`` gets method ``name`` from ``logging.Logger`` (patched there or not)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass is logging.Logger
    return False


def handle(logger: logging.Logger, record: logging.LogRecord) -> None:
    """``logger.handle(record)`` as the standard library does it, past any wrapper of callHandlers.

    Where the logger's class overrides ``handle`` or ``callHandlers`` (a
    class of the program's), or ``handle`` is not the standard library's
    (something replaced it), the logger's own: it decides, and a wrapper may
    then see the record.
    """
    cls = type(logger)
    if not (
        _logging_defines(cls, "callHandlers")
        and _logging_defines(cls, "handle")
        and getattr(cls.handle, "__module__", None) == "logging"
    ):
        logger.handle(record)
        return
    if logger.disabled:
        return
    found = logger.filter(record)
    if not found:
        return
    if isinstance(found, logging.LogRecord):  # 3.12+: a filter may return a record
        record = found
    call_handlers(logger, record)


def call_handlers(logger: logging.Logger, record: logging.LogRecord) -> None:
    """The standard library's ``Logger.callHandlers``, whatever has replaced it on ``Logger``.

    A class of the program's that overrides it keeps its own.
    """
    if not _logging_defines(type(logger), "callHandlers"):
        logger.callHandlers(record)
        return
    found = 0
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found += 1
            if record.levelno >= handler.level:
                handler.handle(record)
        current = current.parent if current.propagate else None  # type: ignore[assignment]
    if found:
        return
    last = logging.lastResort
    if last is not None:
        if record.levelno >= last.level:
            last.handle(record)
    elif logging.raiseExceptions and not logger.manager.emittedNoHandlerWarning:
        sys.stderr.write('No handlers could be found for logger "%s"\n' % logger.name)
        logger.manager.emittedNoHandlerWarning = True
