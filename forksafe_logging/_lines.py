"""The sender's side of the fast path: a record's lines formatted where it was made.

The top process offers a *plan* for a logger name and level when every
handler a record of them reaches there is one whose output the sender can
produce exactly (see :mod:`forksafe_logging._plans`): the plan names the
formatters, by their settings. The sender then formats each line itself,
with a ``logging.Formatter`` made from those settings, and sends them in an
``F`` frame (:mod:`forksafe_logging._wire`), with what the top needs to
handle the record the usual way should the plan be out of date by the
time the frame is read: its message, traceback text and stack. The top
only writes the lines.

A record goes the usual way (``None`` from :meth:`LinePlan.frame`) when it
has fields of its own (``extra=``, a record factory's), a message that is not
a string (structlog's event dicts stay structured), or when formatting it
raises: the top then makes of it what it always did.
"""

from __future__ import annotations

import json
import logging
import struct
import sys
import time

from forksafe_logging import _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

    #: What a sender keeps: the plans offered on its connection.
    Plans = Dict[Tuple[str, int], "LinePlan"]
    #: A record formatted for the fast path: its times, lines, message,
    #: traceback and stack (UTF-8), all but the definition's number.
    Made = Tuple[Tuple[float, float, float], List[bytes], bytes, Optional[bytes], Optional[bytes]]

_PART = _wire.PART.pack
_ABSENT = _wire.PART.pack(_wire.ABSENT)
_HEAD = _wire.FAST_HEAD.pack
_TWO_ABSENT = _ABSENT * 2
#: A frame's length, its tag, :data:`_wire.FAST_HEAD` and one line's length.
_ONE_LINE = struct.Struct(">Ic" + _wire.FAST_HEAD.format.lstrip(">") + "I")
#: How many fields a record has when nothing was added to it.
_PLAIN_SIZE = len(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
_STYLES = {"%": logging.PercentStyle, "{": logging.StrFormatStyle, "$": logging.StringTemplateStyle}
_CONVERTERS = {"localtime": time.localtime, "gmtime": time.gmtime}


def time_zone() -> List[Any]:
    """What ``time.localtime`` depends on here: a plan's local times are this process's."""
    return [time.timezone, time.altzone, time.daylight, list(time.tzname)]


class _LineFormatter(logging.Formatter):
    """``logging.Formatter``, with what does not change from record to record worked out once.

    ``format`` is the stock one's, step for step (the same in 3.9 to 3.15),
    with whether the format uses the time found once, and a ``%`` format
    without ``defaults`` applied straight to the record's fields.
    ``formatTime`` gives what the stock one gives, keeping the text of the
    last second: the converter floors ``created`` to a whole second, and the
    text of a second does not change (unless the program changes its time
    zone: see the plan's check).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``(second, its text)``, one object: threads format at once, and
        #: a second must never be read with another second's text.
        self._last: Tuple[int, str] = (-1, "")
        self._uses_time = self.usesTime()
        style = self._style
        if type(style) is logging.PercentStyle and not getattr(style, "_defaults", None):
            fmt = style._fmt
            self._message: Any = lambda record: fmt % record.__dict__  # type: ignore[operator]
        else:
            self._message = self.formatMessage

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self._uses_time:
            record.asctime = self.formatTime(record, self.datefmt)
        s: str = self._message(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            if s[-1:] != "\n":
                s = s + "\n"
            s = s + record.exc_text
        if record.stack_info:
            if s[-1:] != "\n":
                s = s + "\n"
            s = s + self.formatStack(record.stack_info)
        return s

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        created = record.created
        if created.__class__ is not float or created < 0:
            return super().formatTime(record, datefmt)
        second = int(created)
        last = self._last
        if last[0] != second:
            text = time.strftime(datefmt or self.default_time_format, self.converter(created))
            last = self._last = (second, text)
        if datefmt or not self.default_msec_format:
            return last[1]
        return self.default_msec_format % (last[1], record.msecs)


def _formatter(spec: List[Any]) -> logging.Formatter:
    fmt, datefmt, style, converter, time_format, msec_format, defaults = spec
    if style not in _STYLES or converter not in _CONVERTERS:
        raise ValueError("unknown style or converter")
    if defaults is not None:
        made = _LineFormatter(fmt, datefmt, style, validate=False, defaults=defaults)
    else:
        made = _LineFormatter(fmt, datefmt, style, validate=False)
    made.converter = _CONVERTERS[converter]  # type: ignore[method-assign]
    made.default_time_format = time_format
    made.default_msec_format = msec_format
    return made


class LinePlan:
    """The formatters of one plan the top offered, and its number."""

    __slots__ = ("formatters", "number")

    def __init__(self, number: int, formatters: List[logging.Formatter]) -> None:
        self.number = number
        self.formatters = formatters

    def lines(self, record: logging.LogRecord) -> Optional[Made]:
        """``record`` formatted by the plan's formatters; None: it goes the usual way.

        Runs the program's code (a ``__str__`` of an argument): the caller
        holds no lock of ours.
        """
        d = record.__dict__
        if len(d) != _PLAIN_SIZE or d["msg"].__class__ is not str:
            return None
        times = (d["created"], d["msecs"], d["relativeCreated"])
        if times[0].__class__ is not float or times[1].__class__ is not float:
            return None  # a record factory's odd times: the usual way knows them
        try:
            lines = [f.format(record).encode("utf-8", "surrogatepass") for f in self.formatters]
            message = d["message"].encode("utf-8", "surrogatepass")
            exc_text = d["exc_text"]
            stack = d["stack_info"]
            if exc_text is not None:
                exc_text = str(exc_text).encode("utf-8", "surrogatepass")
            if stack is not None:
                stack = str(stack).encode("utf-8", "surrogatepass")
            if times[2].__class__ is not float:
                times = (times[0], times[1], float(times[2]))
        except Exception:
            # A bad format string, a broken __str__, an odd time: the usual
            # way, which sends what it can of any record.
            for added in ("message", "asctime"):
                d.pop(added, None)
            return None
        return times, lines, message, exc_text, stack

    def frame(self, number: int, made: Made) -> Optional[bytes]:
        """The ``F`` frame of what :meth:`lines` made, for definition ``number``."""
        times, lines, message, exc_text, stack = made
        if len(lines) == 1 and exc_text is None and stack is None:
            # The common case in one pack: frame length, tag, head, line length.
            line = lines[0]
            size = _ONE_LINE.size - 4 + len(line) + 4 + len(message) + 8
            head = _ONE_LINE.pack(size, b"F", *times, number, self.number, 1, len(line))
            return b"".join((head, line, _PART(len(message)), message, _TWO_ABSENT))
        parts = [b"F", _HEAD(*times, number, self.number, len(lines))]
        for data in (*lines, message, exc_text, stack):
            if data is None:
                parts.append(_ABSENT)
            else:
                parts.append(_PART(len(data)))
                parts.append(data)
        payload = b"".join(parts)
        if len(payload) > _wire.MAX_FRAME:
            return None
        return _wire.HEADER.pack(len(payload)) + payload


def accept(fields: List[Any]) -> Optional[Tuple[Tuple[str, int], LinePlan]]:
    """A plan offered in a notice: ``((name, level), plan)``; None if this process cannot use it.

    Only an interpreter of the top's version formats exactly as the top
    does, and local times only in the top's time zone.
    """
    try:
        _, number, name, levelno, specs, version, zone = fields
        if list(sys.version_info[:2]) != version:
            return None
        if zone is not None and zone != time_zone():
            return None
        formatters = [_formatter(spec) for spec in specs]
        return (str(name), int(levelno)), LinePlan(int(number), formatters)
    except Exception:
        return None


def take_notice(plans: Plans, data: bytes) -> None:
    """Apply a notice of the listener (see :data:`_wire.NOTICE_BIT`) to a connection's ``plans``."""
    try:
        fields = json.loads(data.decode("ascii"))
        kind = fields[0]
    except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError):
        return
    if kind == "plan":
        accepted = accept(fields)
        if accepted is not None:
            plans[accepted[0]] = accepted[1]
    elif kind == "withdraw":
        for key, plan in list(plans.items()):
            if plan.number == fields[1]:
                del plans[key]
