"""The top's side of the fast path: the plans offered to senders, and writing their lines.

A *plan* is what the top process would do with a record of one logger name
and level sent to its logger tree: the handlers it reaches there, each with
its formatter. When that handling is plain (see
:mod:`forksafe_logging._reproducible`), the listener offers the plan to the
senders that use that name and level (a *notice* on their connection, see
:mod:`forksafe_logging._wire`). They then send the lines formatted
(:mod:`forksafe_logging._lines`), and the listener writes them: all the
lines of a run of such records to a handler in one ``write``, under the
handler's lock, then its ``flush()``.

A plan is a snapshot of the top's configuration, which can change at any
time. So before it writes a run of lines, the listener compares the
plan's *facts* (every level, handler list, filter list, ``propagate``,
formatter setting and logging function the plan depends on) with the
configuration of now; if anything differs, the run's records are handled
the usual way, rebuilt from what each frame carries besides its lines, and
the plan's senders are told it is withdrawn. Called from the listener's
thread only.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys

from forksafe_logging import _decode, _lines, _reproducible, _router, _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from forksafe_logging._inbox import Connection

    #: A record read on the fast path, until the listener writes its lines:
    #: ``(plan number, definition template, F frame payload, lines, created)``.
    Fast = Tuple[int, Dict[str, Any], bytes, Tuple[bytes, ...], float]

_facts = _reproducible.facts
#: Plans kept at most (one per logger name and level children log with).
MAX_PLANS = 4096


class Plan:
    """One offered plan: its number, handlers, formatters, and the facts it was made from."""

    __slots__ = ("alive", "facts", "formats", "key", "notice", "number", "offered", "targets")

    def __init__(
        self,
        *,
        number: int,
        key: Tuple[str, int],
        targets: List[logging.Handler],
        formats: List[int],
        notice: bytes,
        made_from: Optional[Tuple[Any, ...]],
    ) -> None:
        self.number = number
        self.key = key
        self.targets = targets
        #: For each target, the index of its formatter's line in a frame.
        self.formats = formats
        self.notice = notice
        self.facts = made_from
        self.alive = True
        #: The connections it was offered on.
        self.offered: List[Connection] = []


class Plans:
    """The plans of the listener: made, offered, checked, written, withdrawn."""

    def __init__(
        self, stats: Dict[str, int], dispatch: Callable[[str, logging.LogRecord], None]
    ) -> None:
        self._stats = stats
        self._dispatch = dispatch
        self._by_key: Dict[Tuple[str, int], Plan] = {}
        self._by_number: Dict[int, Plan] = {}
        self._next = 1
        #: Off: no plan is offered (``FORKSAFE_LOGGING_FAST_PATH=0``, see _settings).
        self.enabled = True

    def offer(self, wanted: List[Tuple[Connection, str, int]]) -> None:
        """Offer a plan to each sender that defined a name and level (``wanted``, emptied)."""
        asked = wanted[:]
        del wanted[:]
        if not self.enabled:
            return
        for conn, name, levelno in asked:
            try:
                plan = self._plan((name, levelno))
            except Exception as exc:  # a bug of ours: no plan, the usual way
                _router.warn("no fast-path plan for %r: %r" % (name, exc))
                continue
            if plan is not None and conn.sock.fileno() >= 0:
                self._send(conn, plan)

    def _plan(self, key: Tuple[str, int]) -> Optional[Plan]:
        plan = self._by_key.get(key)
        if plan is not None and plan.alive:
            if _facts(*key) == plan.facts:
                return plan
            return self._replace(plan)
        return self._make(key)

    def _make(self, key: Tuple[str, int]) -> Optional[Plan]:
        if len(self._by_number) >= MAX_PLANS:
            return None  # children using ever new logger names: the top's memory stays bounded
        made_from = _facts(*key)
        targets = _reproducible.targets(*key) if made_from is not None else None
        if not targets:
            return None
        specs: List[List[Any]] = []
        formats = []
        for handler in targets:
            spec = _reproducible.spec(handler.formatter or logging._defaultFormatter)  # type: ignore[attr-defined]
            if spec is None:
                return None
            if spec not in specs:
                specs.append(spec)
            formats.append(specs.index(spec))
        local = any(spec[3] == "localtime" for spec in specs)
        number = self._next
        fields = ["plan", number, key[0], key[1], specs, list(sys.version_info[:2]),
                  _lines.time_zone() if local else None]  # fmt: skip
        notice = _wire.notice(fields)
        if notice is None:
            return None
        self._next += 1
        plan = self._by_key[key] = self._by_number[number] = Plan(
            number=number,
            key=key,
            targets=targets,
            formats=formats,
            notice=notice,
            made_from=made_from,
        )
        return plan

    def _send(self, conn: Connection, plan: Plan) -> None:
        if notify(conn, plan.notice):
            offered = plan.offered
            if len(offered) >= 64 and len(offered) & (len(offered) - 1) == 0:
                # At each power of two: the connections closed since go.
                offered[:] = [c for c in offered if c.sock.fileno() >= 0]
            offered.append(conn)

    def _replace(self, plan: Plan) -> Optional[Plan]:
        """``plan`` is out of date: withdrawn, and the new one (if any) offered to its senders."""
        senders = plan.offered[:]
        self.withdraw(plan)
        new = self._make(plan.key)
        if new is not None:
            for conn in senders:
                if conn.sock.fileno() >= 0:
                    self._send(conn, new)
        return new

    def withdraw(self, plan: Plan) -> None:
        """Out of date: its senders are told to stop using it."""
        plan.alive = False
        self._by_number.pop(plan.number, None)
        if self._by_key.get(plan.key) is plan:
            del self._by_key[plan.key]
        self._stats["plans_withdrawn"] += 1
        notice = _wire.notice(["withdraw", plan.number])
        for conn in plan.offered:
            if conn.sock.fileno() >= 0:
                # Not sent (a full buffer): its lines still come here, and
                # go the usual way.
                notify(conn, notice)  # type: ignore[arg-type]
        plan.offered = []

    def write(self, run: List[Any]) -> None:
        """Handle a run of fast records of one plan, in order (items of ``_inbox``).

        Never raises: the listener's thread must outlive anything (see _router).
        """
        try:
            plan = self._by_number.get(run[0][2][0])
            if plan is not None and _facts(*plan.key) != plan.facts:
                self._replace(plan)
                plan = None
            count = 0 if plan is None else max(plan.formats) + 1
            if plan is None or any(len(item[2][3]) != count for item in run):
                # Out of date; or not what this plan makes (garbage, or the
                # lines of another plan under its number): the usual way.
                for item in run:
                    self._fallback(item)
                return
            self._stats["records"] += len(run)
            self._stats["fast_records"] += len(run)
            for handler, index in zip(plan.targets, plan.formats):
                _write(handler, [item[2][3][index] for item in run], run)
        except BaseException as exc:  # a bug of ours
            self._stats["dispatch_errors"] += 1
            _router.warn("fast-path lines could not be written: %r" % (exc,))

    def _fallback(self, item: Any) -> None:
        try:
            record = _record(item)
        except _decode.Garbage:
            self._stats["garbage"] += 1
            return
        self._dispatch(item[1], record)


def notify(conn: Connection, notice: bytes) -> bool:
    """Send ``notice`` on ``conn`` if it fits now (the listener never waits for a sender).

    A notice is one small message, which a stream socket takes whole or
    not at all; should it ever take part of one, the rest of the stream
    would be garbage to the sender: it is told the connection has ended
    (it then opens another), and what it sent still gets read.
    """
    try:
        sent = conn.sock.send(notice)
    except OSError:
        return False
    if sent != len(notice):
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return False
    return True


def _write(handler: Any, lines: List[bytes], run: List[Any]) -> None:
    """Write a run's ``lines`` for ``handler`` as its ``emit`` would, in one ``write``."""
    terminator = handler.terminator
    try:
        text = (terminator.encode("utf-8", "surrogatepass").join(lines)).decode(
            "utf-8", "surrogatepass"
        ) + terminator
    except UnicodeDecodeError:
        for item in run:
            handler.handle(_record(item))
        return
    handler.acquire()
    try:
        if getattr(handler, "stream", None) is None:
            # A FileHandler not opened yet (delay=True) or closed: its
            # own emit knows what to do, record by record.
            for item in run:
                handler.emit(_record(item))
            return
        if type(handler) is logging.handlers.WatchedFileHandler:
            handler.reopenIfNeeded()
        handler.stream.write(text)
        handler.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(_record(run[0]))
    finally:
        handler.release()


def _record(item: Any) -> logging.LogRecord:
    """The record of a fast item, as an ``R`` frame would have brought it."""
    _, template, payload, _, _ = item[2]
    return _decode.fast_record(template, _decode.fast_head(payload), payload)
