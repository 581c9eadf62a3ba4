"""structlog integration: events from every process of the tree reach the top process's handlers.

Two processors, for a structlog chain:

- :class:`SendToListener`, last in the chain: it turns the event into a
  standard :class:`logging.LogRecord` and sends it to the process tree's
  listener, so the top process's handlers write it, and structlog writes
  nothing locally.
- :func:`add_process_info`: adds the process's pid, name and parent's pid.

structlog over the standard library (``structlog.stdlib.LoggerFactory`` with
``ProcessorFormatter``) needs neither: :func:`forksafe_logging.install`
forwards its records, with the event dict kept whole. structlog's own write
locks are repaired in forked children by :func:`~forksafe_logging.install`,
whether or not this module is imported.

This module needs structlog (``pip install 'forksafe_logging[structlog]'``);
nothing else in the package imports it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from typing import Any, Dict, MutableMapping, NoReturn, Optional, Tuple

try:
    import structlog
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "forksafe_logging.structlog needs structlog, which is not installed: "
        "pip install 'forksafe_logging[structlog]'"
    ) from exc

from forksafe_logging import _forward, _tree, _wire

__all__ = ["SendToListener", "add_process_info"]

#: structlog's method names (those of its own loggers and of the stdlib's).
_LEVELS: Dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "log": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "err": logging.ERROR,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "failure": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

#: Frames of these modules are structlog's or ours, not the caller's.
_SKIP_PREFIXES = ("structlog.", __name__)


def _level(method_name: str, event_dict: Any) -> int:
    level = _LEVELS.get(method_name)
    if level is None and isinstance(event_dict, MutableMapping):
        named = event_dict.get("level")
        if isinstance(named, str):
            level = logging.getLevelName(named.upper())
    return level if isinstance(level, int) else logging.INFO


def _caller() -> Tuple[str, int, Optional[str]]:
    """File, line and function of the code that called structlog."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == "structlog" or str(module).startswith(_SKIP_PREFIXES)):
            code = frame.f_code
            return code.co_filename, frame.f_lineno, code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return "(unknown file)", 0, None


def _send(logger: logging.Logger, record: logging.LogRecord) -> None:
    if _tree.is_descendant():
        # The top process's listener dispatches it through its logger tree,
        # sent by the forwarder this process's logging records use too.
        _forward.forwarder().handle(record)
    else:
        # The top of the tree, or a process with no listener: it is handled
        # here, as if logged through ``logger``.
        logger.handle(record)


class SendToListener:
    """Processor: send the event to the top process's handlers; structlog writes nothing.

    Put it last in structlog's processor chain. The event becomes a
    :class:`logging.LogRecord` of the standard logger ``logger_name``, at the
    level of the method called (``log.warning(...)`` gives ``WARNING``), and
    is handled as the top process's logging configuration says: its levels
    and handlers decide, as for any record of that logger. From a forked,
    spawned or forkserver child of a program that called
    :func:`forksafe_logging.install`, it travels over the child's own
    connection to the listener, once, in order with the child's other records.

    What the top process's formatter sees depends on where it is put:

    - in place of the renderer, the record's ``msg`` is the event dict itself
      (values that are not plain data as their ``repr``; an ``exc_info`` as
      the traceback's text under ``"exception"``), with the attributes
      ``ProcessorFormatter`` looks for: render it with
      ``structlog.stdlib.ProcessorFormatter`` in the top process;
    - right after a renderer, the record's message is the rendered line:
      ``logging.Formatter("%(message)s")`` writes it as it is.

    Args:
        logger_name: The standard logger whose configuration (in the top
            process) handles the events.

    .. versionadded:: 0.3.0
    """

    def __init__(self, logger_name: str = "structlog") -> None:
        if not isinstance(logger_name, str):
            raise TypeError("logger_name must be a str; got %r" % (logger_name,))
        self.logger_name = logger_name

    def __repr__(self) -> str:
        return "SendToListener(logger_name=%r)" % (self.logger_name,)

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> NoReturn:
        if isinstance(event_dict, MutableMapping):
            # Made plain here, in every process, so the top process's
            # formatter sees the same event whichever process logged it.
            msg: Any = _wire.event(dict(event_dict))
        elif isinstance(event_dict, str):
            msg = event_dict
        elif isinstance(event_dict, (bytes, bytearray)):
            msg = bytes(event_dict).decode("utf-8", "backslashreplace")
        else:
            raise TypeError(
                "SendToListener must be the last processor, after a renderer that returns "
                "str or bytes or in place of it; it got %s from the processor before it"
                % type(event_dict).__name__
            )
        level = _level(method_name, event_dict)
        target = logging.getLogger(self.logger_name)
        if target.isEnabledFor(level):
            pathname, lineno, func = _caller()
            record = logging.LogRecord(
                self.logger_name, level, pathname, lineno, msg, None, None, func
            )
            if type(msg) is dict:
                # What ProcessorFormatter takes for a record made by structlog.
                record._logger = target  # type: ignore[attr-defined]
                record._name = method_name  # type: ignore[attr-defined]
            _send(target, record)
        raise structlog.DropEvent


def add_process_info(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: add ``pid``, ``process_name`` and ``parent_pid`` to the event.

    Read at each event, so a forked child never reports its parent's values.
    ``process_name`` is :func:`multiprocessing.current_process`'s name, which
    a child made by a plain ``os.fork()`` shares with its parent.

    .. versionadded:: 0.3.0
    """
    event_dict["pid"] = os.getpid()
    event_dict["process_name"] = multiprocessing.current_process().name
    event_dict["parent_pid"] = os.getppid()
    return event_dict
