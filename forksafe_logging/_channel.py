"""A process's own connection to the tree's listener, opened on first use.

One connection per process, so no lock is shared between processes on the
write path; a lock within the process keeps threads' frames whole. A record is
in the kernel's socket buffer when its logging call returns, so a SIGKILL
right after loses nothing. A forked child never writes on its parent's
connection: it opens its own.
"""

from __future__ import annotations

import atexit
import os
import select
import socket
import sys
import threading
import time

from forksafe_logging import _compat, _dial, _peers, _tree, _unconfirmed, _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    import logging
    from typing import Any, Callable, Dict, List, Optional, Tuple

    #: ``(top pid, key, socket path)``: how a process reaches a listener.
    Endpoint = Tuple[int, bytes, str]
    _Kept = Tuple[int, _wire.StaticKey, int, bytes, Callable[[logging.LogRecord], str]]

# Bound once, when the package is imported. gunicorn's gevent worker
# monkey-patches after the fork, in each worker: a cooperative socket behind
# this module's lock, made before the patching and so not cooperative, would
# let a greenlet yield inside send() with the lock held, and the next
# greenlet that logs would block the whole thread on it for ever. Imported
# after the patching, all three (the socket class is _dial's) are gevent's,
# which agree with each other too.
_RLock = threading.RLock
_poll = select.poll

#: Distinct call sites (logger, level, line, thread...) remembered per connection.
MAX_DEFINITIONS = 10000

#: Seconds before connecting again after the listener's backlog was full;
#: doubled after each such failure, up to the second.
FIRST_BACKOFF = 0.01
MAX_BACKOFF = 1.0

#: Every this many records, a sender reads the listener's confirmations
#: (_wire.CONFIRM): rarely enough to cost nothing per record.
CONFIRM_EVERY = 64
#: When its connection breaks, a sender waits this long at most for the
#: listener's last confirmations (a stopping listener sends them before it
#: closes; a killed one closes at once). Then it shows the rest on its stderr.
SETTLE_WAIT = 1.0
#: Connections a sender gave up mid-frame (an exception in the middle of a
#: send), kept until the listener has confirmed what it sent on them.
MAX_RETIRED = 16


class ListenerGone(Exception):
    """The listener cannot be reached: the top process has died or stopped it."""


class Channel:
    """The connection of this process; reopened after a fork."""

    def __init__(self) -> None:
        #: Re-entrant, so that a hold an exception cut off can be given back
        #: (see :meth:`_reentered`).
        self.lock = _RLock()
        self.pid = os.getpid()
        self.sock: Optional[socket.socket] = None
        #: ``sock`` and what it carried unconfirmed.
        self.ledger: Optional[_unconfirmed.Ledger] = None
        #: Connections this process gave up mid-frame, oldest first.
        self.retired: List[_unconfirmed.Ledger] = []
        #: Connections the listener ended, with records still to show.
        self.dead: List[_unconfirmed.Ledger] = []
        #: Records sent since confirmations were last read.
        self.since_check = 0
        #: Definition numbers given on the current connection.
        self.numbers: Dict[_wire.StaticKey, int] = {}
        self.gone = False
        self.warned = False
        #: After connect() found the listener's backlog full: not before then.
        self.retry_at = 0.0
        self.backoff = FIRST_BACKOFF

    def _connect(self, timeout: Optional[float]) -> socket.socket:
        where = _tree.endpoint()
        if where is None:
            raise ListenerGone("no listener: install() was not called in a parent process")
        sock = _dial.dial(where, timeout)
        self.ledger = _unconfirmed.Ledger(sock)
        _check_at_exit_of_this_process()
        return sock

    def send(
        self,
        key: _wire.StaticKey,
        frame: Callable[[int], bytes],
        timeout: Optional[float],
        show: Callable[[logging.LogRecord], str],
    ) -> bool:
        """Send one record; False if it was dropped after ``timeout`` seconds.

        ``key`` names the record's repeating fields; ``frame(number)`` makes
        its record frame; ``show(record)`` its line on stderr, should the
        listener die before confirming it. Raises :class:`ListenerGone` when
        the listener cannot be reached.
        """
        if self._reentered():
            # A signal handler that logs, run in the middle of this thread's
            # send: this record cannot go without cutting that one in two.
            return False  # dropped, and counted
        with self.lock:
            if self.dead:
                self._show_dead()  # interrupted before it was done
            if self.gone:
                raise ListenerGone("the listener is gone")
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                try:
                    return self._send(key, frame, deadline, show)
                except (BrokenPipeError, ConnectionResetError):
                    # The listener closed this connection: it stopped, or
                    # died, or (alive) dropped a connection it could not
                    # parse. What it did not confirm goes to stderr; this
                    # record, of which nothing was read, once more on a new
                    # connection, which tells whether the listener is there.
                    self._settle("the listener closed this process's connection")
                    return self._send(key, frame, deadline, show)
            except socket.timeout:
                # Part of the frame may be out: this connection's stream is
                # spoiled. The listener counts the half frame; reconnect later.
                self._retire()
                return False
            except BlockingIOError:
                # connect() found the listener's backlog full (EAGAIN): a
                # busy listener, not a dead one. This record is dropped
                # (the caller asked not to wait); the next one tries again,
                # after a pause that doubles each time, up to a second.
                self._retire()
                self.retry_at = time.monotonic() + self.backoff
                self.backoff = min(self.backoff * 2, MAX_BACKOFF)
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

    def _reentered(self) -> bool:
        """Whether a call that holds the lock is suspended below the caller, in this thread.

        If not, and this thread holds the lock all the same, an exception
        from a signal handler cut a call off between taking the lock and the
        block that gives it back (3.14, see _compat.reclaim): given back.
        Looked at only when this thread holds the lock, which is rare: no
        marker set inside the block would do, as an exception can land
        before it is set or before it is cleared.
        """
        if not self.lock._is_owned():  # type: ignore[attr-defined]
            return False
        try:
            frame: Any = sys._getframe(2)  # the caller's caller: not the caller itself
        except ValueError:  # called from C with nothing below
            frame = None
        while frame is not None:
            if frame.f_code in _HOLDING_CODES:
                return True
            frame = frame.f_back
        _compat.reclaim(self.lock)
        return False

    def ask_levels(self, timeout: float) -> Optional[Tuple[Dict[str, int], int]]:
        """The top's logger levels of now, asked of the listener; None if it does not answer.

        Before this process has sent any record: the answer is the only
        thing on the connection then (the listener's confirmations come
        after records).
        """
        if self._reentered():
            return None
        with self.lock:
            try:
                sock = self.sock
                if sock is None:
                    sock = self.sock = self._connect(timeout)
                sock.settimeout(timeout)
                sock.sendall(_wire.HEADER.pack(len(_wire.LEVELS)) + _wire.LEVELS)
                (size,) = _wire.HEADER.unpack(_dial.recv_exactly(sock, _wire.HEADER.size))
                levels = _wire.parse_levels(_dial.recv_exactly(sock, size))
                sock.settimeout(None)
                return levels
            except Exception:
                ledger = self.ledger
                self._discard()
                if ledger is not None:
                    ledger.close()
                return None

    def _send(
        self,
        key: _wire.StaticKey,
        frame: Callable[[int], bytes],
        deadline: Optional[float],
        show: Callable[[logging.LogRecord], str],
    ) -> bool:
        sock = self.sock
        if sock is None:
            if self.retry_at:
                wait = self.retry_at - time.monotonic()
                if wait > 0:
                    if deadline is not None and deadline - time.monotonic() < wait:
                        return False  # not before the deadline: dropped, and counted
                    time.sleep(wait)  # the caller waits for a busy listener anyway
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            sock = self.sock = self._connect(timeout)
            self.retry_at = 0.0
            self.backoff = FIRST_BACKOFF
        number = self.numbers.get(key)
        if number is None:
            if len(self.numbers) >= MAX_DEFINITIONS:
                self.numbers.clear()  # numbers are reused; the listener overwrites
            number = defined = len(self.numbers) + 1
            record = frame(defined)
            data = _wire.definition(defined, key) + record
        else:
            defined = 0
            data = record = frame(number)
        if deadline is not None:
            # Drop a record before any byte of it is out, while we can:
            # the connection stays usable for the next one.
            remaining = max(0.0, deadline - time.monotonic())
            poller = _poll()  # not select(): descriptors may be > 1023
            poller.register(sock, select.POLLOUT)
            if not poller.poll(remaining * 1000):
                return False
            sock.settimeout(max(0.0, deadline - time.monotonic()))
        elif sock.gettimeout() is not None:
            sock.settimeout(None)
        sock.sendall(data)
        if defined:
            self.numbers[key] = defined
        ledger = self.ledger
        ledger.sent += 1  # type: ignore[union-attr]
        ledger.records.append((ledger.sent, key, number, record, show))  # type: ignore[union-attr]
        self.since_check += 1
        if self.since_check >= CONFIRM_EVERY:
            self.since_check = 0
            self._check()
        return True

    def _check(self) -> None:
        """Read the confirmations that have come, on every connection still open."""
        for ledger in list(self.retired):
            if not ledger.take(None):
                # Ended: the listener read it to its end and confirmed all
                # it handled, or it is dead.
                ledger.reason = "the listener closed a connection of this process"
                self.dead.append(ledger)
                self.retired.remove(ledger)
        current = self.ledger
        if current is not None and not current.take(None):
            self._settle("the listener closed this process's connection")
        elif self.dead:
            self._show_dead()

    def _settle(self, reason: str) -> None:
        """The listener closed the connection: its last confirmations, the rest on stderr."""
        for ledger in [*self.retired, self.ledger]:
            if ledger is not None:
                ledger.reason = reason
                self.dead.append(ledger)
        self.retired = []
        self._discard()
        self._show_dead()

    def _show_dead(self) -> None:
        # Taken off the list only once shown: see _unconfirmed.Ledger.show.
        until = time.monotonic() + SETTLE_WAIT
        while self.dead:
            ledger = self.dead[0]
            if ledger.records and not ledger.announced:
                try:
                    ledger.take(until)  # to the end: the last confirmations
                except Exception:
                    pass
            ledger.show()
            ledger.close()
            self.dead.pop(0)

    def _discard(self) -> None:
        """Leave the current connection (whose ledger the caller has dealt with)."""
        self.numbers.clear()
        self.sock = self.ledger = None

    def _retire(self) -> None:
        """Give up the current connection mid-frame; keep it until what it carried is confirmed."""
        ledger = self.ledger
        if ledger is None:
            self._discard()
            return
        if not ledger.records:
            self._discard()
            ledger.close()
            return
        self.retired.append(ledger)  # first: nothing between may lose it
        self._discard()
        try:
            # The listener reads to here (the half frame is counted), handles
            # what was whole, confirms it and closes: the end tells.
            ledger.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if len(self.retired) > MAX_RETIRED:
            # Its records were very likely handled long since; they are
            # unguarded against the listener's death from now on.
            self.retired.pop(0).close()


#: The calls that hold a channel's lock: one of them below a call that finds
#: the lock taken by its own thread means that call re-entered it.
_HOLDING_CODES = (Channel.send.__code__, Channel.ask_levels.__code__)

_channel = Channel()


def channel() -> Channel:
    """This process's channel (a forked child gets a new one)."""
    global _channel
    ch = _channel
    if ch.pid != os.getpid():
        ch = _channel = Channel()
    return ch


#: The process whose exit runs :func:`check_at_exit` (a forked child registers again).
_exit_checked_pid = 0


def _check_at_exit_of_this_process() -> None:
    global _exit_checked_pid
    pid = os.getpid()
    if _exit_checked_pid == pid:
        return
    _exit_checked_pid = pid
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
    ch = _channel
    if ch.pid != os.getpid() or (ch.ledger is None and not ch.retired and not ch.dead):
        return
    if ch._reentered():
        return  # a call of this thread is in the middle of a send
    if not ch.lock.acquire(timeout=SETTLE_WAIT):
        return  # a thread stuck in a send: not this hook's to wait for
    try:
        ch._check()
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
