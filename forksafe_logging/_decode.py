"""The listener's side of the wire format: frames back into ``LogRecord`` objects.

The format is :mod:`forksafe_logging._wire`'s. A :class:`Decoder` per
connection keeps the definitions (``D`` frames) that connection has made,
and rebuilds a record from each record frame (``R``) without running
anything the bytes could name: JSON only, every field's type checked, and
the record made without ``Logger.makeRecord`` (so no record factory of the
top runs, and nothing of the top is added to a child's record).
"""

from __future__ import annotations

import json
import logging
import os.path
import struct

from forksafe_logging import _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

_decode = json.JSONDecoder().decode


class Garbage(ValueError):
    """A frame that is not one we send."""


_new_record = logging.LogRecord.__new__
_files: Dict[str, Tuple[str, str]] = {}


def _file_and_module(pathname: str) -> Tuple[str, str]:
    found = _files.get(pathname)
    if found is None:
        filename = os.path.basename(pathname)
        found = (filename, os.path.splitext(filename)[0])
        if len(_files) < 4096:
            _files[pathname] = found
    return found


_FAST_HEAD = _wire.FAST_HEAD
_PART = _wire.PART.unpack_from
_PART_SIZE = _wire.PART.size
_ABSENT = _wire.ABSENT


def fast_head(payload: bytes) -> Tuple[float, float, float, int, int, int]:
    """The head of an ``F`` frame (see :data:`_wire.FAST_HEAD`); :class:`Garbage` if cut short."""
    try:
        return _FAST_HEAD.unpack_from(payload, 1)  # type: ignore[return-value]
    except struct.error:
        raise Garbage("a fast record cut short") from None


def fast_parts(payload: bytes, count: int) -> Tuple[List[Optional[bytes]], int]:
    """The first ``count`` parts of an ``F`` frame after its head, and where the next begins."""
    parts: List[Optional[bytes]] = []
    pos = 1 + _FAST_HEAD.size
    try:
        for _ in range(count):
            (size,) = _PART(payload, pos)
            pos += _PART_SIZE
            if size == _ABSENT:
                parts.append(None)
                continue
            end = pos + size
            if end > len(payload):
                raise Garbage("a fast record cut short")
            parts.append(payload[pos:end])
            pos = end
    except struct.error:
        raise Garbage("a fast record cut short") from None
    return parts, pos


def _text(part: Optional[bytes]) -> Optional[str]:
    return None if part is None else part.decode("utf-8", "surrogatepass")


def fast_record(
    template: Dict[str, Any], head: Tuple[float, float, float, int, int, int], payload: bytes
) -> logging.LogRecord:
    """The record an ``F`` frame carries besides its lines, as an ``R`` frame would give it.

    For the listener when the lines cannot be used (the plan they were made
    for is out of date), and for a sender that shows what was not confirmed.
    """
    created, msecs, relative, _, _, lines = head
    fields, pos = fast_parts(payload, lines + 3)
    if pos != len(payload) or fields[lines] is None:
        raise Garbage("a fast record of the wrong shape")
    try:
        msg, exc_text, stack = (_text(part) for part in fields[lines:])
    except UnicodeDecodeError as exc:
        raise Garbage("a fast record's text: %s" % exc) from None
    record = _new_record(logging.LogRecord)
    d = record.__dict__
    d.update(template)
    d["msg"] = msg
    d["created"] = created
    d["msecs"] = msecs
    d["relativeCreated"] = relative
    d["exc_text"] = exc_text
    d["stack_info"] = stack
    return record


def fast_item(definitions: Dict[int, Tuple[str, Dict[str, Any]]], payload: bytes) -> Any:
    """An ``F`` frame: its lines for the plans (a :data:`_plans.Fast`), or ``(route, record)``."""
    head = fast_head(payload)
    defined = definitions.get(head[3])
    if defined is None:
        raise Garbage("a fast record of an undefined number")
    route, template = defined
    if route:  # never sent so: only the top's logger tree has plans
        return route, fast_record(template, head, payload)
    if head[5] == 1:
        (size,) = _PART(payload, _FIRST_LINE)
        line = payload[_FIRST_LINE + 4 : _FIRST_LINE + 4 + size]
        if len(line) != size:
            raise Garbage("a fast record cut short")
        lines: Tuple[Any, ...] = (line,)
    else:
        lines = tuple(fast_parts(payload, head[5])[0])
    return (head[4], template, payload, lines, head[0])


_FIRST_LINE = 1 + _wire.FAST_HEAD.size


class Decoder:
    """The definitions one connection has made, and the frames that use them."""

    __slots__ = ("defined", "definitions")

    def __init__(self) -> None:
        self.definitions: Dict[int, Tuple[str, Dict[str, Any]]] = {}
        #: The number the last ``D`` frame defined.
        self.defined = 0

    def feed(self, payload: bytes) -> Optional[Tuple[str, logging.LogRecord]]:
        """``(route, record)`` for an ``R`` or ``F`` frame, ``None`` for a ``D`` frame.

        Raises :class:`Garbage` for anything else.
        """
        if payload[:1] == b"F":
            head = fast_head(payload)
            defined = self.definitions.get(head[3])
            if defined is None:
                raise Garbage("a fast record of an undefined number")
            return defined[0], fast_record(defined[1], head, payload)
        try:
            fields = _decode(payload[1:].decode("ascii"))
            tag = payload[:1]
            if tag == b"R":
                number, msg, created, msecs, relative, exc_text, stack, extras = fields
                route, template = self.definitions[number]
                if (type(msg) is not str and type(msg) is not dict) or (
                    extras is not None and type(extras) is not dict
                ):
                    raise Garbage("fields of the wrong type")
                record = _new_record(logging.LogRecord)
                d = record.__dict__
                if extras:
                    d.update(extras)
                    if "_logger" in extras and "_name" in extras:
                        # structlog's wrap_for_formatter: the sender's stdlib
                        # logger, which travelled as its repr. Its namesake
                        # here serves ProcessorFormatter's processors.
                        d["_logger"] = logging.getLogger(template["name"])
                d.update(template)
                d["msg"] = msg
                d["created"] = created
                d["msecs"] = msecs
                d["relativeCreated"] = relative
                d["exc_text"] = exc_text
                d["stack_info"] = stack
                return route, record
            if tag == b"D":
                self._define(fields)
                return None
        except Garbage:
            raise
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise Garbage("%s: %s" % (type(exc).__name__, exc)) from None
        raise Garbage("unknown frame tag %r" % (payload[:1],))

    def _define(self, fields: List[Any]) -> None:
        (number, route, name, levelno, levelname, pathname, lineno, func, thread, tname, pname,
         pid, task) = fields  # fmt: skip
        if (
            type(number) is not int
            or type(route) is not str
            or type(name) is not str
            or type(levelno) is not int
            or type(pathname) is not str
        ):
            raise Garbage("definition fields of the wrong type")
        filename, module = _file_and_module(pathname)
        self.defined = number
        self.definitions[number] = (
            route,
            {
                "name": name,
                "args": None,
                "levelname": levelname,
                "levelno": levelno,
                "pathname": pathname,
                "filename": filename,
                "module": module,
                "exc_info": None,
                "lineno": lineno,
                "funcName": func,
                "thread": thread,
                "threadName": tname,
                "processName": pname,
                "process": pid,
                "taskName": task,
            },
        )
