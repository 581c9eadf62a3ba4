"""How a log record crosses a process boundary: plain JSON in length-prefixed frames.

No pickle, ever: the listener must not run code because of bytes it reads.
What cannot be made plain is made text on the sending side: the message is
merged with its arguments, a traceback becomes ``exc_text``, and an ``extra``
value that is not plain data (str, int, float, bool, None, and lists and
dicts of them) arrives as its ``repr``. Encoding never raises.

A record's fields split in two. Those that repeat from call to call (logger,
level, file, line, function, thread, process) are sent once per connection
in a *definition* frame (``D``) and referred to by number; each *record*
frame (``R``) carries only what changes: the message, the times, and the
rarer traceback, stack and extras. That keeps the per-record work small on
both ends, which is where multiprocess logging spends its time.

A frame is a 4-byte big-endian length, then the payload: a tag byte and a
JSON array.

- ``D[id, route, name, levelno, levelname, pathname, lineno, funcName,
  thread, threadName, processName, process, taskName]``
- ``R[id, msg, created, msecs, relativeCreated, exc_text, stack_info, extras]``

A record on the fast path (:mod:`forksafe_logging._lines`) is an ``F`` frame
instead, not JSON: :data:`FAST_HEAD`, then the lines the sender formatted,
then the message, ``exc_text`` and ``stack_info``, each part a
:data:`PART` length and UTF-8 bytes (lone surrogates kept).

``msg`` is a string, or an object for a ``dict`` message (structlog's event
dicts): kept structured, so that a formatter in the top process (structlog's
``ProcessorFormatter``, a JSON formatter) sees keys and values, not a repr.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import sys
import traceback

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple, Union

    #: The key of a record's repeating fields.
    StaticKey = Tuple[Any, ...]

HEADER = struct.Struct(">I")
#: The one thing the listener sends on a connection after the handshake: how
#: many of its records it has handled so far. A sender shows on its stderr
#: the records the listener never confirmed, should the listener die.
CONFIRM = struct.Struct(">Q")
#: A confirmation with this bit set is a *notice* instead: its low 32 bits
#: are the length of a JSON array that follows (see :mod:`forksafe_logging._plans`).
NOTICE_BIT = 1 << 63
#: Notices larger than this are never sent (a sender peeks this much at most).
MAX_NOTICE = 16 * 1024
#: The head of an ``F`` frame (a record on the fast path, see
#: :mod:`forksafe_logging._lines`): ``created``, ``msecs``,
#: ``relativeCreated``, the definition's number, the plan's number, and how
#: many lines follow.
FAST_HEAD = struct.Struct(">dddIIB")
#: The length before each part of an ``F`` frame; :data:`ABSENT` for a part that is ``None``.
PART = struct.Struct(">I")
ABSENT = 0xFFFFFFFF
#: A frame with only this tag asks the listener for the top's logger levels,
#: before any record: it answers with :func:`levels_message`.
LEVELS = b"L"
#: A frame with only this tag is a sender's wake-up, on its socket, for a
#: listener asleep while the sender writes to its ring (_ring): nothing else.
WAKE = b"W"
#: The whole wake-up frame.
WAKE_FRAME = HEADER.pack(1) + WAKE
#: Frames larger than this are refused as garbage (a 10 MB message fits).
MAX_FRAME = 256 * 1024 * 1024

#: What every LogRecord has; anything else in ``record.__dict__`` is an extra.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)

_encoder = json.JSONEncoder(ensure_ascii=True, check_circular=False, separators=(",", ":"))
_encode = _encoder.encode
_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_PLAIN_SCALARS = (str, int, float, bool, type(None))

#: The biggest ints that cross as numbers (about 600 digits): every
#: interpreter can turn them into text and back, whatever its limit on
#: digits (3.11+: 4,300 by default, 640 at the least). Bigger ones cross as
#: text: making them numbers again could raise, and would cost quadratic time.
_INT_BITS = 1990


def _is_plain_number(value: Any) -> bool:
    if type(value) is int:
        return bool(value.bit_length() <= _INT_BITS)
    return math.isfinite(value)


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN_SCALARS):
        # Exact types only: a subclass may carry behaviour that would not
        # survive the hop; NaN and infinities are not JSON.
        kind = type(value)
        if kind is int or kind is float:
            return _is_plain_number(value)
        return kind in _PLAIN_SCALARS
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
        if isinstance(value, int):
            # Over the interpreter's limit on decimal digits: hexadecimal
            # has none.
            return hex(value)
        try:
            return "<unrepresentable %s: %r>" % (type(value).__name__, exc)
        except Exception:
            return "<unrepresentable %s>" % type(value).__name__


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _int_or(value: Any, default: Optional[int]) -> Optional[int]:
    return value if type(value) is int and value.bit_length() <= _INT_BITS else default


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as plain data: containers rebuilt, anything else not plain as its ``repr``."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if value.bit_length() <= _INT_BITS else _safe_repr(value)
    if kind is float:
        return value if math.isfinite(value) else _safe_repr(value)
    if depth < 32:
        if kind is dict:
            return {
                k if type(k) is str else _safe_repr(k): _plain(v, depth + 1)
                for k, v in value.items()
            }
        if kind is list or kind is tuple:
            return [_plain(v, depth + 1) for v in value]
    return _safe_repr(value)


def _format_exc_info(exc_info: Any) -> Optional[str]:
    """A traceback as text, from what structlog accepts as ``exc_info``."""
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    if len(exc_info) != 3 or exc_info[0] is None:
        return None
    try:
        text = "".join(traceback.format_exception(*exc_info))
    except Exception as exc:
        return "Traceback could not be formatted: %s" % _safe_repr(exc)
    return text[:-1] if text.endswith("\n") else text


def event(msg: Dict[Any, Any]) -> Dict[str, Any]:
    """A structlog event dict (a record's ``msg``) made plain, keys kept.

    An ``exc_info`` in it is the sender's exception, which only the sender
    can format (``True`` means "the one being handled here"): it becomes the
    traceback's text under ``"exception"``, as structlog's
    ``format_exc_info`` processor does.
    """
    plain: Dict[str, Any] = _plain(msg)
    if "exc_info" in msg:
        del plain["exc_info"]
        exc_info = msg["exc_info"]
        text = _format_exc_info(exc_info) if exc_info else None
        if text is not None:
            plain.setdefault("exception", text)
    return plain


def message(record: logging.LogRecord) -> Union[str, Dict[str, Any]]:
    """The record's message merged with its arguments, whatever they are.

    A ``dict`` message without arguments stays a dict (made plain): it is
    structured data, as structlog's ``ProcessorFormatter.wrap_for_formatter``
    and JSON formatters use it, and ``getMessage()`` would flatten it.
    """
    try:
        if type(record.msg) is dict and not record.args:
            return event(record.msg)
        return str(record.getMessage())
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
    names = record.__dict__.keys() - _STANDARD
    if not names:
        return None
    values = record.__dict__
    return {
        str(name): values[name] if _is_plain(values[name]) else _safe_repr(values[name])
        for name in names
    }


def static_key(route: str, record: logging.LogRecord) -> StaticKey:
    """What identifies a record's repeating fields (hashable, cheap to build)."""
    return (
        route,
        record.name,
        record.levelno,
        record.levelname,
        record.pathname,
        record.lineno,
        record.funcName,
        record.thread,
        record.threadName,
        record.processName,
        record.process,
        getattr(record, "taskName", None),
    )


def definition(number: int, key: StaticKey) -> bytes:
    """A ``D`` frame giving ``number`` to the repeating fields in ``key``."""
    route, name, levelno, levelname, pathname, lineno, func, thread, tname, pname, pid, task = key
    fields = [
        number,
        str(route),
        str(name),
        _int_or(levelno, logging.ERROR),
        str(levelname),
        str(pathname),
        _int_or(lineno, 0),
        _opt_str(func),
        _int_or(thread, None),
        _opt_str(tname),
        _opt_str(pname),
        _int_or(pid, None),
        task if type(task) is str else None,
    ]
    payload = b"D" + _encode(fields).encode("ascii")
    return HEADER.pack(len(payload)) + payload


def record_frame(number: int, msg: Union[str, Dict[str, Any]], record: logging.LogRecord) -> bytes:
    """An ``R`` frame: the changing fields of ``record``, with its definition's number."""
    exc_text = _exc_text(record)
    stack = _opt_str(record.stack_info) if record.stack_info else None
    extras = _extras(record)
    created = _finite(record.created)
    msecs = _finite(record.msecs)
    relative = _finite(record.relativeCreated)
    if exc_text is None and stack is None and extras is None and type(msg) is str:
        # The common case, without the general encoder: repr() of a finite
        # float is valid JSON, and the message is escaped by json's C code.
        payload = b"R[%d,%s,%r,%r,%r,null,null,null]" % (
            number,
            _string(msg).encode("ascii"),
            created,
            msecs,
            relative,
        )
    else:
        try:
            payload = b"R" + _encode(
                [number, msg, created, msecs, relative, exc_text, stack, extras]
            ).encode("ascii")
        except Exception as exc:
            # Not expected (every value was made plain), but a record is
            # never lost to its encoding: it crosses without its extras.
            note = " [forksafe_logging: extra fields could not be sent: %s]" % _safe_repr(exc)
            text = (msg if type(msg) is str else _safe_repr(msg)) + note
            payload = b"R" + _encode(
                [number, text, created, msecs, relative, exc_text, stack, None]
            ).encode("ascii")
    if len(payload) > MAX_FRAME:
        fields = [number, msg, created, msecs, relative, exc_text, stack]
        payload = _cut_to_fit(fields, len(payload))
    return HEADER.pack(len(payload)) + payload


def _cut_to_fit(fields: List[Any], size: int) -> bytes:
    """A record too big for the listener, which would drop the connection with it.

    It crosses with the start of its message, traceback and stack (each
    escaped character takes at most 6 bytes) and without its extra fields,
    saying how big it was: one record degraded, the channel untouched.
    """
    number, msg, created, msecs, relative, exc_text, stack = fields
    keep = MAX_FRAME // 32
    text = msg if type(msg) is str else _safe_repr(msg)
    note = " [forksafe_logging: record of %d bytes cut to fit the listener's limit of %d]" % (
        size,
        MAX_FRAME,
    )
    cut = [
        number,
        text[:keep] + note,
        created,
        msecs,
        relative,
        None if exc_text is None else exc_text[:keep],
        None if stack is None else stack[:keep],
        None,
    ]
    return b"R" + _encode(cut).encode("ascii")


def notice(fields: List[Any]) -> Optional[bytes]:
    """``fields`` as a notice on the listener's side of a connection; None if too big."""
    payload = _encode(fields).encode("ascii")
    if len(payload) > MAX_NOTICE:
        return None
    return CONFIRM.pack(NOTICE_BIT | len(payload)) + payload


def levels_message(found: Dict[str, int], disable: int) -> bytes:
    """The listener's answer to :data:`LEVELS`: a length, then ``[{name: level}, disable]``."""
    payload = json.dumps([found, disable]).encode("utf-8")
    return HEADER.pack(len(payload)) + payload


def parse_levels(payload: bytes) -> Optional[Tuple[Dict[str, int], int]]:
    """What :func:`levels_message` carried; None if it is not that."""
    try:
        found, disable = json.loads(payload.decode("utf-8"))
        return {str(name): int(level) for name, level in dict(found).items()}, int(disable)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
