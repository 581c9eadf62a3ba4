"""A process's own connection to the tree's listener, opened on first use.

One connection per process, so no lock is shared between processes on the
write path; a lock within the process keeps threads' frames whole. A record is
in the ring the listener shares with this process (:mod:`~forksafe_logging._ring`),
or where there is none in the kernel's socket buffer, when its logging call
returns, so a SIGKILL right after loses nothing. A forked child never writes
on its parent's connection: it opens its own.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time

from forksafe_logging import _compat, _dial, _peers, _tree, _unconfirmed, _wire
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    import logging
    from typing import Any, Callable, Dict, Optional, Tuple

    #: ``(top pid, key, socket path)``: how a process reaches a listener.
    Endpoint = Tuple[int, bytes, str]

# Bound once, when the package is imported. gunicorn's gevent worker
# monkey-patches after the fork, in each worker: a cooperative socket behind
# this module's lock, made before the patching and so not cooperative, would
# let a greenlet yield inside send() with the lock held, and the next
# greenlet that logs would block the whole thread on it for ever. Imported
# after the patching, all three (the socket class is _dial's, the poll
# _unconfirmed's) are gevent's, which agree with each other too.
_RLock = threading.RLock

#: Distinct call sites (logger, level, line, thread...) remembered per connection.
MAX_DEFINITIONS = 10000

#: Every this many records, a sender reads the listener's confirmations
#: (_wire.CONFIRM): rarely enough to cost nothing per record.
CONFIRM_EVERY = 64
SETTLE_WAIT = _unconfirmed.SETTLE_WAIT


class ListenerGone(Exception):
    """The listener cannot be reached: the top process has died or stopped it."""


class Channel:
    """The connection of this process; reopened after a fork."""

    def __init__(self) -> None:
        #: Re-entrant: a hold an exception cut off can be given back (reentered()).
        self.lock = _RLock()
        self.pid = os.getpid()
        self.sock: Optional[socket.socket] = None
        #: ``sock`` and what it carried unconfirmed.
        self.ledger: Optional[_unconfirmed.Ledger] = None
        #: Connections given up or ended, with records not all confirmed.
        self.unsettled = _unconfirmed.Unsettled()
        #: Records sent since confirmations were last read.
        self.since_check = 0
        #: Definition numbers given on the current connection.
        self.numbers: Dict[_wire.StaticKey, int] = {}
        self.gone = False
        self.warned = False
        #: When to connect again after the listener's backlog was full.
        self.backoff = _dial.Backoff()

    def _connect(self, timeout: Optional[float]) -> socket.socket:
        where = _tree.endpoint()
        if where is None:
            raise ListenerGone("no listener: install() was not called in a parent process")
        sock, ring = _dial.dial(where, timeout)
        self.ledger = _unconfirmed.Ledger(sock, ring)
        _check_at_exit_of_this_process()
        return sock

    def send(
        self,
        key: _wire.StaticKey,
        record: logging.LogRecord,
        timeout: Optional[float],
        show: Callable[[logging.LogRecord], str],
    ) -> bool:
        """Send one record; False if it was dropped after ``timeout`` seconds.

        ``key`` names its repeating fields; ``show(record)`` gives its line on
        stderr should the listener die unconfirmed. :class:`ListenerGone`: unreachable.
        """
        made = _made(self.ledger, key, record)  # the program's code: not under the lock
        if reentered(self):
            # A signal handler that logs, run in the middle of this thread's
            # send: this record cannot go without cutting that one in two.
            return False  # dropped, and counted
        with self.lock:
            if self.unsettled.dead:
                self.unsettled.show_dead()  # interrupted before it was done
            if self.gone:
                raise ListenerGone("the listener is gone")
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                try:
                    return self._send(key, record, made, deadline, show)
                except (BrokenPipeError, ConnectionResetError):
                    # The listener closed this connection: it stopped, or
                    # died, or (alive) dropped a connection it could not
                    # parse. What it did not confirm goes to stderr; this
                    # record, of which nothing was read, once more on a new
                    # connection, which tells whether the listener is there.
                    self._settle("the listener closed this process's connection")
                    return self._send(key, record, made, deadline, show)
            except socket.timeout:
                # Part of the frame may be out: this connection's stream is
                # spoiled. The listener counts the half frame; reconnect later.
                self._retire()
                return False
            except BlockingIOError:
                # connect() found the listener's backlog full (EAGAIN): busy,
                # not dead. This record is dropped (the caller asked not to
                # wait); the next tries again after a pause (_dial.Backoff).
                self._retire()
                self.backoff.refused()
                return False
            except OSError as exc:
                self._settle("the listener cannot be reached (%s)" % (exc,))
                self.gone = True
                raise ListenerGone(str(exc)) from None
            except BaseException:
                # An exception from a signal handler (a task's time limit,
                # SIGALRM, KeyboardInterrupt) may leave part of a frame out:
                # the next frame would follow it and the listener would read
                # garbage. A new connection for the next record instead.
                self._retire()
                raise

    def _send(
        self,
        key: _wire.StaticKey,
        record: logging.LogRecord,
        made: Tuple[Any, Any],
        deadline: Optional[float],
        show: Callable[[logging.LogRecord], str],
    ) -> bool:
        if self.sock is None:
            if not self.backoff.wait(deadline):
                return False  # not before the deadline: dropped, and counted
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.sock = self._connect(timeout)
            self.backoff.connected()
        ledger: Any = self.ledger
        number, defined, body, data = _numbered(self.numbers, ledger.plans, key, record, made)
        if not _unconfirmed.put(ledger, data, deadline):
            return False
        going = _unconfirmed.committed(ledger)
        if defined:
            self.numbers[key] = defined  # a plan for it may come (_lines): read soon
            self.since_check = max(self.since_check, CONFIRM_EVERY - 4)
        ledger.sent += 1
        ledger.records.append((ledger.sent, key, number, body, show))
        if not going:
            # The listener stopped reading the ring, perhaps after taking
            # this record: confirmed, or shown on stderr; never sent again.
            self._settle("the listener closed this process's connection")
            return True
        self.since_check += 1
        if self.since_check >= CONFIRM_EVERY:
            self.since_check = 0
            _check(self)
        return True

    def _settle(self, reason: str) -> None:
        """The listener closed the connection: its last confirmations, the rest on stderr."""
        self.unsettled.bury(self.ledger, reason)
        self._discard()
        self.unsettled.show_dead()

    def _discard(self) -> None:
        """Leave the current connection (whose ledger the caller has dealt with)."""
        self.numbers.clear()
        self.sock = self.ledger = None

    def _retire(self) -> None:
        """Give up the current connection mid-frame; keep it until what it carried is confirmed."""
        ledger = self.ledger
        if ledger is not None and ledger.records:
            self.unsettled.retire(ledger)  # first: nothing between may lose it
            self._discard()
            self.unsettled.shut(ledger)
        else:
            self._discard()
            if ledger is not None:
                ledger.close()


def _check(ch: Channel) -> None:
    """Read the confirmations that have come, on every connection still open."""
    ch.unsettled.check_retired()
    current = ch.ledger
    if current is not None and not current.take(None):
        ch._settle("the listener closed this process's connection")
    elif ch.unsettled.dead:
        ch.unsettled.show_dead()


def _made(ledger: Any, key: _wire.StaticKey, record: logging.LogRecord) -> Tuple[Any, Any]:
    """``(plan, lines)`` when the listener offered a plan for the record (see _lines),
    else ``(None, message)``: what of a frame can be made before taking the lock.

    The ledger's plans are read without the lock: the frame is made under it,
    and only if the plan is still the connection's.
    """
    plans = None if ledger is None or key[0] else ledger.plans
    if plans:
        plan = plans.get((key[1], key[2]))
        if plan is not None:
            lines = plan.lines(record)
            if lines is not None:
                return plan, lines
    return None, _wire.message(record)


def _numbered(
    numbers: Dict[_wire.StaticKey, int],
    plans: Dict[Tuple[str, int], Any],
    key: _wire.StaticKey,
    record: logging.LogRecord,
    made: Tuple[Any, Any],
) -> Tuple[int, int, bytes, bytes]:
    """``(number, defined, record frame, bytes to send)`` for ``record``, of ``key``.

    ``defined`` is the number the bytes define (0: none; the caller adds it
    to ``numbers`` once they are sent). The frame is an ``F`` frame when
    ``made`` holds lines of a plan the connection still has (:func:`_made`).
    """
    number = numbers.get(key)
    defined = 0
    if number is None:
        if len(numbers) >= MAX_DEFINITIONS:
            numbers.clear()  # numbers are reused; the listener overwrites
        number = defined = len(numbers) + 1
    plan: Any = made[0]
    part = made[1]
    body = None
    still = plans.get((key[1], key[2])) is plan
    if plan is not None and still:
        body = plan.frame(number, part)
    if body is None:
        # Reconnected since (a plan is the connection's), rare: the message now.
        msg = part if plan is None else _wire.message(record)
        body = _wire.record_frame(number, msg, record)
    if defined:
        return number, defined, body, _wire.definition(number, key) + body
    return number, 0, body, body


def reentered(ch: Channel) -> bool:
    """Whether a call that holds ``ch``'s lock is suspended below the caller, in this thread.

    If not, and this thread holds the lock all the same, an exception
    from a signal handler cut a call off between taking the lock and the
    block that gives it back (3.14, see _compat.reclaim): given back.
    Looked at only when this thread holds the lock, which is rare: no
    marker set inside the block would do, as an exception can land
    before it is set or before it is cleared.
    """
    if not ch.lock._is_owned():  # type: ignore[attr-defined]
        return False
    try:
        frame: Any = sys._getframe(2)  # the caller's caller: not the caller itself
    except ValueError:  # called from C with nothing below
        frame = None
    while frame is not None:
        if frame.f_code in _HOLDING_CODES:
            return True
        frame = frame.f_back
    _compat.reclaim(ch.lock)
    return False


def ask_levels(timeout: float) -> Optional[Tuple[Dict[str, int], int]]:
    """The top's logger levels of now, asked of the listener; None if it does not answer.

    Before this process has sent any record: the answer is the only
    thing on the connection then (the listener's confirmations come
    after records).
    """
    ch = channel()
    if reentered(ch):
        return None
    with ch.lock:
        try:
            sock = ch.sock
            if sock is None:
                sock = ch.sock = ch._connect(timeout)
            sock.settimeout(timeout)
            ask = _wire.HEADER.pack(len(_wire.LEVELS)) + _wire.LEVELS
            ledger: Any = ch.ledger
            if ledger.ring is None:
                sock.sendall(ask)
            elif ledger.ring.put(ask, time.monotonic() + timeout):
                ledger.wake()  # whether or not it sleeps: this is rare
            else:
                raise socket.timeout("no room in the ring")
            (size,) = _wire.HEADER.unpack(_dial.recv_exactly(sock, _wire.HEADER.size))
            levels = _wire.parse_levels(_dial.recv_exactly(sock, size))
            sock.settimeout(None)
            return levels
        except Exception:
            ledger = ch.ledger
            ch._discard()
            if ledger is not None:
                ledger.close()
            return None


#: The calls that hold a channel's lock: one of them below a call that finds
#: the lock taken by its own thread means that call re-entered it.
_HOLDING_CODES = (Channel.send.__code__, ask_levels.__code__)


def channel(pid: Optional[int] = None) -> Channel:
    """This process's channel (a forked child gets a new one); ``pid``: this process's."""
    ch = state.channel
    if ch is None or ch.pid != (pid or os.getpid()):
        ch = state.channel = Channel()
    return ch


def _check_at_exit_of_this_process() -> None:
    pid = os.getpid()
    if state.exit_checked_pid == pid:
        return
    state.exit_checked_pid = pid
    atexit.register(check_at_exit)
    # A multiprocessing child ends with os._exit(), after its finalizers
    # and without atexit: a finalizer then, after any other (they may log).
    util = sys.modules.get("multiprocessing.util")
    process = sys.modules.get("multiprocessing.process")
    if util is not None and process is not None and process.parent_process() is not None:
        util.Finalize(None, check_at_exit, exitpriority=-100)


def check_at_exit() -> None:
    """At a sender's exit: if the listener is gone, show what it never confirmed.

    First, its Sentry sends what it holds (see ``_peers.flush_sentry``).
    Does not wait for a live listener's confirmations: what it has not
    handled yet, it handles after this process has gone.
    """
    _peers.flush_sentry()
    ch = state.channel
    if ch is None or ch.pid != os.getpid() or (ch.ledger is None and not ch.unsettled):
        return
    if reentered(ch):
        return  # a call of this thread is in the middle of a send
    if not ch.lock.acquire(timeout=SETTLE_WAIT):
        return  # a thread stuck in a send: not this hook's to wait for
    try:
        _check(ch)
    except Exception:
        pass
    finally:
        ch.lock.release()


def warn_once(ch: Channel, reason: str, write: Callable[[str], None]) -> None:
    if not ch.warned:
        ch.warned = True
        write(
            "forksafe_logging: the log listener of the process tree cannot be reached (%s); "
            "this process (pid %d) writes its records to stderr from now on\n"
            % (reason, os.getpid())
        )
