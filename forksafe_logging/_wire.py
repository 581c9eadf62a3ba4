"""How a log record crosses a process boundary: plain JSON in a length-prefixed frame.

No pickle, ever: the listener must not run code because of bytes it reads.
What cannot be made plain is made text on the sending side: the message is
merged with its arguments, a traceback becomes ``exc_text``, and an ``extra``
value that is not plain data (str, int, float, bool, None, and lists and
dicts of them) arrives as its ``repr``. Encoding never raises.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import traceback
from typing import Any, Dict, List, Optional, Tuple

#: A frame is a 4-byte big-endian length, then that many bytes of payload.
HEADER = struct.Struct(">I")
#: Frames larger than this are refused as garbage (a 10 MB message fits).
MAX_FRAME = 256 * 1024 * 1024

#: What every LogRecord has; anything else in ``record.__dict__`` is an extra.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)

_encoder = json.JSONEncoder(ensure_ascii=True, check_circular=False, separators=(",", ":"))
_decode = json.JSONDecoder().decode
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN_SCALARS):
        # float('nan') and friends are not JSON; bool/int/str subclasses may
        # carry behaviour that would not survive: keep exact types only.
        return type(value) in _PLAIN_SCALARS and (type(value) is not float or math.isfinite(value))
    if depth > 32:
        return False
    if type(value) is list:
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return "<unrepresentable %s: %r>" % (type(value).__name__, exc)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as exc:  # a bad format string or a broken __str__
        return "%s %% %s [message could not be formatted: %s]" % (
            _safe_repr(record.msg),
            _safe_repr(record.args),
            _safe_repr(exc),
        )


def _exc_text(record: logging.LogRecord) -> Optional[str]:
    if record.exc_text:
        return str(record.exc_text)
    if record.exc_info and record.exc_info[0] is not None:
        try:
            text = "".join(traceback.format_exception(*record.exc_info))
        except Exception as exc:
            return "Traceback could not be formatted: %s" % _safe_repr(exc)
        return text[:-1] if text.endswith("\n") else text
    return None


def _extras(record: logging.LogRecord) -> Optional[Dict[str, Any]]:
    extras = None
    for key, value in record.__dict__.items():
        if key in _STANDARD:
            continue
        if extras is None:
            extras = {}
        extras[str(key)] = value if _is_plain(value) else _safe_repr(value)
    return extras


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def encode(route: str, record: logging.LogRecord) -> bytes:
    """A whole frame (header and payload) for ``record``, sent on ``route``."""
    fields: List[Any] = [
        route,
        str(record.name),
        _message(record),
        record.levelno if type(record.levelno) is int else logging.ERROR,
        str(record.levelname),
        str(record.pathname),
        record.lineno if type(record.lineno) is int else 0,
        _opt_str(record.funcName),
        float(record.created),
        float(record.msecs),
        float(record.relativeCreated),
        record.thread if type(record.thread) is int else None,
        _opt_str(record.threadName),
        _opt_str(record.processName),
        record.process if type(record.process) is int else None,
        _exc_text(record),
        str(record.stack_info) if record.stack_info else None,
        getattr(record, "taskName", None)
        if type(getattr(record, "taskName", None)) is str
        else None,
        _extras(record),
    ]
    payload = _encoder.encode(fields).encode("ascii")
    return HEADER.pack(len(payload)) + payload


class Garbage(ValueError):
    """A frame that is not a record we sent."""


_new_record = logging.LogRecord.__new__


def decode(payload: bytes) -> Tuple[str, logging.LogRecord]:
    """``(route, record)`` from a frame's payload; :class:`Garbage` if it is not one."""
    try:
        fields = _decode(payload.decode("ascii"))
        (
            route,
            name,
            msg,
            levelno,
            levelname,
            pathname,
            lineno,
            func,
            created,
            msecs,
            relative,
            thread,
            thread_name,
            process_name,
            process,
            exc_text,
            stack_info,
            task_name,
            extras,
        ) = fields
    except (ValueError, TypeError) as exc:
        raise Garbage(str(exc)) from None
    if (
        type(route) is not str
        or type(name) is not str
        or type(msg) is not str
        or type(levelno) is not int
        or (extras is not None and type(extras) is not dict)
    ):
        raise Garbage("fields of the wrong type")
    record = _new_record(logging.LogRecord)
    d = record.__dict__
    if extras:
        d.update(extras)
    filename, module = _file_and_module(pathname)
    d.update(
        name=name,
        msg=msg,
        args=None,
        levelname=levelname,
        levelno=levelno,
        pathname=pathname,
        filename=filename,
        module=module,
        exc_info=None,
        exc_text=exc_text,
        stack_info=stack_info,
        lineno=lineno,
        funcName=func,
        created=created,
        msecs=msecs,
        relativeCreated=relative,
        thread=thread,
        threadName=thread_name,
        processName=process_name,
        process=process,
        taskName=task_name,
    )
    return route, record


_file_cache: Dict[Any, Tuple[str, str]] = {}


def _file_and_module(pathname: Any) -> Tuple[str, str]:
    cached = _file_cache.get(pathname)
    if cached is None:
        import os.path

        path = str(pathname)
        filename = os.path.basename(path)
        cached = (filename, os.path.splitext(filename)[0])
        if len(_file_cache) < 4096:
            _file_cache[pathname] = cached
    return cached
