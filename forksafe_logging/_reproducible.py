"""Which records a sender can format as the top would: the handlers, formatters and facts of a plan.

The top's handling of a record of one logger name and level is *plain* when
every handler it reaches is a stock one that writes ``format(record) +
terminator`` to a stream (``StreamHandler``, ``FileHandler``,
``WatchedFileHandler``) with no filter, formatted by a stock
``logging.Formatter`` whose fields a sender's record has as the listener's
rebuilt record has them, and logging's own methods are logging's (not
wrapped by Sentry, ddtrace or a test). :func:`targets` finds those handlers,
:func:`spec` what a sender needs to make a formatter again, and
:func:`facts` everything that handling depends on, for the listener to
tell, before it writes a plan's lines, whether the configuration changed.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import string
import time

from forksafe_logging import _order
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, List, Optional, Set, Tuple


#: Handlers whose ``emit`` is "format, write the line and the terminator, flush".
_WRITERS = (logging.StreamHandler, logging.FileHandler, logging.handlers.WatchedFileHandler)
_STYLE_NAMES = {
    logging.PercentStyle: "%",
    logging.StrFormatStyle: "{",
    logging.StringTemplateStyle: "$",
}
_CONVERTER_NAMES = {time.localtime: "localtime", time.gmtime: "gmtime"}
#: Fields the sender's record has as the listener's rebuilt record has them.
#: Not ``msg``/``args`` (the listener's record has the merged message, no
#: arguments), ``exc_info``, ``exc_text`` or ``stack_info`` (set as the
#: record is formatted), nor any field of the program's own.
SAME_FIELDS = frozenset(
    [
        "name",
        "levelno",
        "levelname",
        "pathname",
        "filename",
        "module",
        "lineno",
        "funcName",
        "created",
        "msecs",
        "relativeCreated",
        "thread",
        "threadName",
        "process",
        "processName",
        "message",
        "asctime",
        "taskName",
    ]
)
_PERCENT_FIELD = re.compile(r"%\((\w+)\)")
_TEMPLATE_FIELD = re.compile(r"\$(?:\$|(\w+)|\{(\w+)\})")
#: What a formatter may have in its ``__dict__``: anything else (a method
#: set on the instance, an attribute of the program's) makes it unknown.
_FORMATTER_FIELDS = frozenset(
    ["_style", "_fmt", "datefmt", "converter", "default_time_format", "default_msec_format"]
)


def _fields(style: str, fmt: str) -> Optional[Set[str]]:
    """The record fields ``fmt`` uses; None if they cannot be told."""
    try:
        if style == "%":
            return set(_PERCENT_FIELD.findall(fmt))
        if style == "$":
            return {a or b for a, b in _TEMPLATE_FIELD.findall(fmt) if a or b}
        found = set()
        for _, field, spec, _ in string.Formatter().parse(fmt):
            if field is not None:
                found.add(re.split(r"[.\[]", field, maxsplit=1)[0])
            if spec and "{" in spec:
                return None
        return found
    except ValueError:
        return None


def spec(formatter: logging.Formatter) -> Optional[List[Any]]:
    """What a sender needs to make ``formatter`` again; None if it cannot."""
    if type(formatter) is not logging.Formatter or not set(vars(formatter)) <= _FORMATTER_FIELDS:
        return None
    style = formatter._style
    name = _STYLE_NAMES.get(type(style))
    converter = _CONVERTER_NAMES.get(formatter.converter)  # type: ignore[arg-type]
    if name is None or converter is None or set(vars(style)) - {"_fmt", "_defaults", "_tpl"}:
        return None
    fmt = style._fmt
    defaults = getattr(style, "_defaults", None) or None
    if type(fmt) is not str or not _plain_strings(defaults):
        return None
    used = _fields(name, fmt)
    if used is None or not used <= SAME_FIELDS | set(defaults or ()):
        return None
    datefmt = formatter.datefmt
    time_format = formatter.default_time_format
    msec_format = formatter.default_msec_format
    if not all(v is None or type(v) is str for v in (datefmt, time_format, msec_format)):
        return None
    return [fmt, datefmt, name, converter, time_format, msec_format, defaults]


def _plain_strings(defaults: Any) -> bool:
    if defaults is None:
        return True
    return type(defaults) is dict and all(
        type(k) is str and type(v) in (str, int, float, bool, type(None))
        for k, v in defaults.items()
    )


def _methods() -> Tuple[Any, ...]:
    """The logging functions a plan stands in for: patched (Sentry, ddtrace...), no plan."""
    return (
        logging.Logger.handle,
        _call_handlers(),
        logging.Logger.isEnabledFor,
        logging.Logger.getEffectiveLevel,
        logging.Filterer.filter,
        logging.Handler.handle,
        logging.Handler.filter,
        logging.Handler.format,
        logging.StreamHandler.emit,
        logging.StreamHandler.flush,
        logging.FileHandler.emit,
        logging.handlers.WatchedFileHandler.emit,
        logging.Formatter.format,
        logging.Formatter.formatTime,
        logging.Formatter.formatMessage,
        logging.Formatter.usesTime,
        logging.PercentStyle.format,
        logging.StrFormatStyle._format,  # type: ignore[attr-defined]
        logging.StringTemplateStyle._format,  # type: ignore[attr-defined]
    )


def _call_handlers() -> Any:
    """``Logger.callHandlers``, behind the top's own wrapper that orders its records (_order)."""
    found = logging.Logger.callHandlers
    if _order.patched():
        return state.order_wrapped
    return found


def _functions() -> Tuple[Any, ...]:
    """:func:`_methods`, and the settings of logging's classes a plan depends on."""
    return (
        *_methods(),
        logging.Formatter.converter,
        logging.Formatter.default_time_format,
        logging.Formatter.default_msec_format,
        logging._defaultFormatter,  # type: ignore[attr-defined]
        logging.Logger.manager.loggerClass,
        logging.Logger.manager.disable,
    )


def facts(name: str, levelno: int) -> Optional[Tuple[Any, ...]]:
    """Everything the top's handling of a record of ``name`` and ``levelno`` depends on.

    Compared, not interpreted: two equal results mean the same handlers,
    formatted the same way. Lists are copied (a list changed in place must
    not compare equal to itself). None when the configuration holds objects
    of the program's that do not look like logging's (no plan then).
    """
    try:
        return _facts(name, levelno)
    except Exception:  # a handler without ``filters``, a formatter with __slots__...
        return None


def _facts(name: str, levelno: int) -> Tuple[Any, ...]:
    manager = logging.Logger.manager
    found = manager.loggerDict.get(name)
    first = found if isinstance(found, logging.Logger) else None
    start = first or _nearest(name)
    chain = []
    logger: Any = start
    while logger is not None:
        chain.append((logger, type(logger), logger.level, logger.disabled, logger.propagate,
                      tuple(logger.handlers), tuple(logger.filters)))  # fmt: skip
        logger = logger.parent
    handlers = []
    for logger_facts in chain:
        for handler in logger_facts[5]:
            formatter = handler.formatter
            handlers.append((
                handler, type(handler), handler.level, tuple(handler.filters),
                handler.terminator if hasattr(handler, "terminator") else None,
                tuple(vars(handler).keys()),
                formatter, tuple(vars(formatter).items()) if formatter is not None else None,
                tuple(vars(formatter._style).items()) if formatter is not None else None,
            ))  # fmt: skip
    return (first, start, _functions(), tuple(chain), tuple(handlers), levelno)


def _nearest(name: str) -> logging.Logger:
    """The logger that would be the parent of a new logger ``name`` (as the router finds it)."""
    loggers = logging.Logger.manager.loggerDict
    end = name.rfind(".")
    while end > 0:
        found = loggers.get(name[:end])
        if isinstance(found, logging.Logger):
            return found
        end = name.rfind(".", 0, end)
    return logging.root


#: A handler's attributes when made by its class and nothing else set on it.
_HANDLER_FIELDS = frozenset((
    "_name", "level", "formatter", "_closed", "filters", "lock", "stream", "baseFilename", "mode",
    "encoding", "delay", "errors", "_builtin_open", "dev", "ino", "terminator",
))  # fmt: skip


def _first_logger(name: str, levelno: int) -> Optional[logging.Logger]:
    """The logger whose ``callHandlers`` the router calls for ``name``; None: not plainly."""
    manager = logging.Logger.manager
    found = manager.loggerDict.get(name)
    if isinstance(found, logging.Logger):
        if type(found) is not logging.Logger or found.filters or found.disabled:
            return None
        return found
    if manager.loggerClass not in (None, logging.Logger):
        return None  # the router makes the logger, which may be anything
    return _nearest(name)


def _writes_plainly(handler: logging.Handler) -> bool:
    """Whether ``handler``'s handling of a record is "format, write with the terminator, flush"."""
    return (
        type(handler) in _WRITERS
        and not handler.filters
        and set(vars(handler)) <= _HANDLER_FIELDS
        and type(getattr(handler, "terminator", None)) is str
    )


def targets(name: str, levelno: int) -> Optional[List[logging.Handler]]:
    """The handlers a record of ``name`` and ``levelno`` reaches in the top, in order.

    See :func:`_targets`; None too when the configuration holds objects of
    the program's that do not look like logging's.
    """
    try:
        return _targets(name, levelno)
    except Exception:
        return None


def _targets(name: str, levelno: int) -> Optional[List[logging.Handler]]:
    """The handlers a record of ``name`` and ``levelno`` reaches in the top, in order.

    None when the top's handling of it is not the plain walk through
    writing handlers (see the module's docstring), reaches no handler
    (``logging.lastResort``'s), or is dropped there.
    """
    logger = _first_logger(name, levelno) if _stock() else None
    if logger is None or logging.Logger.manager.disable >= levelno:
        return None
    if levelno < logger.getEffectiveLevel():
        return None
    reached: List[logging.Handler] = []
    seen = 0
    current: Any = logger
    while current is not None:
        if type(current) not in (logging.Logger, logging.RootLogger):
            return None
        for handler in current.handlers:
            seen += 1
            if levelno >= handler.level:
                if not _writes_plainly(handler):
                    return None
                reached.append(handler)
        current = current.parent if current.propagate else None
    streams = {id(getattr(h, "stream", None)) for h in reached}
    files = [h.baseFilename for h in reached if isinstance(h, logging.FileHandler)]
    if not seen or len(streams) != len(reached) or len(set(files)) != len(files):
        # No handler: logging.lastResort's. Two writing to one file: a
        # run's lines go handler by handler, which would reorder them there.
        return None
    return reached


_LOGGING_FILES = (logging.__file__, logging.handlers.__file__)


def _stock() -> bool:
    """Whether logging's functions are its own (not wrapped by Sentry, ddtrace, a test...)."""
    for function in _methods():
        code = getattr(function, "__code__", None)
        if code is None or code.co_filename not in _LOGGING_FILES:
            return False
    return type(logging._defaultFormatter) is logging.Formatter  # type: ignore[attr-defined]
