"""What a sender keeps until the listener confirms it, and shows on stderr should the top die.

A record whose logging call returned is in the kernel, on the sender's
connection; if the top is killed before its listener hands it to a handler,
the sender still has its frame here, and writes it to its own stderr.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import sys
import time

from forksafe_logging import _decode, _endpoint, _lines, _ring, _streams, _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    import logging
    import mmap
    from typing import Callable, Deque, List, Optional, Tuple

    _Kept = Tuple[int, _wire.StaticKey, int, bytes, Callable[[logging.LogRecord], str]]

# Bound when the package is imported, as in _channel (gevent patches later).
_poll = select.poll
#: What a sender looks at in one go: a notice fits whole.
_PEEK = _wire.MAX_NOTICE + 4096


def _rebuild(key: _wire.StaticKey, number: int, frame: bytes) -> logging.LogRecord:
    """The record that ``frame`` carries, as the listener would have made it."""
    decoder = _decode.Decoder()
    decoder.feed(_wire.definition(number, key)[_wire.HEADER.size :])
    decoded = decoder.feed(frame[_wire.HEADER.size :])
    if decoded is None:  # never: a record frame we made ourselves
        raise _decode.Garbage("not a whole record frame")
    return decoded[1]


class Ledger:
    """One connection, and the records sent on it that the listener has not confirmed.

    The listener confirms a count (see forksafe_logging._rounds); should it
    die before confirming a record, the record's sender shows it on its
    stderr, so that no record whose logging call returned is lost uncounted.
    """

    __slots__ = (
        "announced",
        "hangup",
        "pinned",
        "plans",
        "poller",
        "reason",
        "records",
        "ring",
        "sent",
        "sock",
    )

    def __init__(self, sock: socket.socket, ring: Optional[mmap.mmap] = None) -> None:
        self.sock = sock
        # A forked child closes its copy by number, as it does the
        # listener's (see state.child_closes), and this object, which the
        # child has too, must never close that number again: the socket is
        # not freed until this process closes it.
        self.pinned = _streams.pin(sock)
        self.poller = _poll()
        self.poller.register(sock, select.POLLIN)
        self.sent = 0
        #: ``(number on this connection, static key, definition number, record
        #: frame, formatting)``, oldest first. The frame, not the record: a
        #: record would keep its arguments and its traceback's frames alive.
        self.records: Deque[_Kept] = collections.deque()
        #: Once the connection is known to be over: why, and whether the
        #: line saying so has been written.
        self.reason = ""
        self.announced = False
        #: The fast path's plans the listener offered on this connection
        #: (see _lines), by logger name and level.
        self.plans: _lines.Plans = {}
        #: Where the connection's frames go, if the listener gave it a ring.
        self.ring = None if ring is None else _ring.Writer(ring, self._news, self.wake)
        #: Asks for no event: poll() reports the hang-up (or error) alone.
        self.hangup = _poll()
        self.hangup.register(sock, 0)

    def wake(self) -> None:
        """Tell a sleeping listener the ring has bytes for it (``BrokenPipeError``: gone)."""
        try:
            sent = self.sock.send(_wire.WAKE_FRAME, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return  # full of wake-ups the listener has not read: it will
        if sent < len(_wire.WAKE_FRAME):  # never seen: a frame this small goes whole
            self.sock.sendall(_wire.WAKE_FRAME[sent:])

    def _news(self, seconds: float) -> None:
        """Wait up to ``seconds`` for what the listener sends; ``BrokenPipeError`` at its end."""
        if self.poller.poll(seconds * 1000) and not self.take(None):
            raise BrokenPipeError("the listener closed this process's connection")

    def take(self, until: Optional[float]) -> bool:
        """Forget the records the listener has confirmed; False once the connection has ended.

        Reads what is there; with ``until`` (a ``time.monotonic()``), waits
        until then for the end of the connection.
        """
        while True:
            wait = 0.0 if until is None else max(0.0, until - time.monotonic())
            if not self.poller.poll(wait * 1000):
                return True
            try:
                # Looked at, used, and only then taken: an exception from a
                # signal handler in between must not lose a confirmation
                # (the last one, on a connection given up, is never repeated).
                data = self.sock.recv(_PEEK, socket.MSG_PEEK)  # readable: no wait
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                return False
            whole, upto = self._messages(data)
            if not whole:
                return True  # part of one: the rest comes with the next
            records = self.records
            while records and records[0][0] <= upto:
                records.popleft()
            self.sock.recv(whole)

    def _messages(self, data: bytes) -> Tuple[int, int]:
        """``(bytes of whole messages, last confirmation)`` in ``data``.

        The notices among them are applied to :attr:`plans` (again, should
        a signal handler's exception make this run twice over them).
        """
        size = _wire.CONFIRM.size
        unpack = _wire.CONFIRM.unpack_from
        pos = 0
        upto = 0
        while len(data) - pos >= size:
            (value,) = unpack(data, pos)
            if value & _wire.NOTICE_BIT:
                end = pos + size + (value & 0xFFFFFFFF)
                if end > len(data):
                    break
                _lines.take_notice(self.plans, data[pos + size : end])
                pos = end
            else:
                upto = value
                pos += size
        return pos, upto

    def show(self) -> None:
        """Write the records never confirmed to stderr, after :attr:`reason`.

        Each is forgotten only once written: an exception from a signal
        handler in the middle leaves the rest for the next call.
        """
        records = self.records
        if records and not self.announced:
            stderr_write(
                "forksafe_logging: %s before it confirmed %d record(s) of this process "
                "(pid %d); they follow (any of them may be in the log too)\n"
                % (self.reason, len(records), os.getpid())
            )
            self.announced = True
        while records:
            _, key, number, frame, show = records[0]
            try:
                text = show(_rebuild(key, number, frame))
            except Exception:
                text = repr(frame)
            stderr_write(text + "\n")
            records.popleft()

    def close(self) -> None:
        _endpoint.close_listed(self.sock)
        self.pinned.clear()
        if self.ring is not None:
            self.ring.unmap()


def put(ledger: Ledger, data: bytes, deadline: Optional[float]) -> bool:
    """Send ``data`` (ring or socket); False if dropped at ``deadline``, none of it out.

    ``BrokenPipeError`` if the listener has closed the connection (none
    of it out); ``socket.timeout`` if the deadline came with part of it out.
    """
    ring = ledger.ring
    if ring is None:
        if not _writable(ledger.sock, deadline):
            return False
        ledger.sock.sendall(data)
        return True
    # Before every record, as a socket's send would fail at once: a
    # listener that stopped or died has closed the socket (one poll(), half
    # a microsecond). Looked for less often, a record committed to a dead
    # top's ring by a process that then ended with os._exit() would take
    # the unconfirmed ones before it with it, unshown.
    if ledger.hangup.poll(0):
        raise BrokenPipeError("the listener closed this process's connection")
    return ring.put(data, deadline)


def committed(ledger: Ledger) -> bool:
    """After :func:`put`: wake a sleeping listener; False if it stopped reading the ring.

    ``BrokenPipeError`` if it stopped before it took the record just put
    (it dropped the connection): the record is not the listener's, and goes
    again, as after a socket's failed send.
    """
    ring = ledger.ring
    if ring is None:
        return True
    flag = ring.look()
    if flag == _ring.IDLE:
        try:
            ledger.wake()
        except (BrokenPipeError, ConnectionResetError):
            # A listener closes the ring before the socket; one that died
            # closed neither, and writes nothing more: R is final too.
            flag = ring.look()
            if flag in (_ring.BUSY, _ring.IDLE):
                flag = _ring.CLOSED
    if flag == _ring.CLOSED and ring.untaken():
        raise BrokenPipeError("the listener closed this process's connection")
    return flag in (_ring.BUSY, _ring.IDLE)


#: When its connection breaks, a sender waits this long at most for the
#: listener's last confirmations (a stopping listener sends them before it
#: closes; a killed one closes at once). Then it shows the rest on its stderr.
SETTLE_WAIT = 1.0
#: Connections a sender gave up mid-frame (an exception in the middle of a
#: send), kept until the listener has confirmed what it sent on them.
MAX_RETIRED = 16


class Unsettled:
    """A sender's connections that carry no new record, but whose records are not all confirmed."""

    __slots__ = ("dead", "retired")

    def __init__(self) -> None:
        #: Connections this process gave up mid-frame, oldest first.
        self.retired: List[Ledger] = []
        #: Connections the listener ended, with records still to show.
        self.dead: List[Ledger] = []

    def __bool__(self) -> bool:
        return bool(self.retired or self.dead)

    def retire(self, ledger: Ledger) -> None:
        """Keep ``ledger``, given up mid-frame, until what it carried is confirmed."""
        self.retired.append(ledger)

    def shut(self, ledger: Ledger) -> None:
        """Tell the listener no more comes on a retired connection."""
        try:
            # The listener reads to here (the half frame is counted), handles
            # what was whole, confirms it and closes: the end tells.
            ledger.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if len(self.retired) > MAX_RETIRED:
            self.check_retired()
        if len(self.retired) > MAX_RETIRED:
            # The listener is behind. Not closed unshown: its records would
            # be lost should the top die before it wrote them (test_chaos
            # caught that on a loaded machine). Settled as a dead one is, at
            # the next logging call (not in this exception's way): waited
            # for up to SETTLE_WAIT, what it did not confirm then is shown.
            oldest = self.retired.pop(0)
            oldest.reason = "the listener fell behind on a connection this process gave up"
            self.dead.append(oldest)

    def check_retired(self) -> None:
        """Read the confirmations that have come on retired connections."""
        for ledger in list(self.retired):
            if not ledger.take(None):
                # Ended: the listener read it to its end and confirmed all
                # it handled, or it is dead.
                ledger.reason = "the listener closed a connection of this process"
                self.dead.append(ledger)
                self.retired.remove(ledger)

    def bury(self, current: Optional[Ledger], reason: str) -> None:
        """The listener closed ``current``: it and every retired connection are dead."""
        for ledger in [*self.retired, current]:
            if ledger is not None:
                ledger.reason = reason
                self.dead.append(ledger)
        self.retired = []

    def show_dead(self) -> None:
        """Wait a little for the dead connections' last confirmations; show the rest."""
        # Taken off the list only once shown: see Ledger.show.
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


def stderr_write(text: str) -> None:
    """Write ``text`` to this process's stderr now; never raises."""
    try:
        stream = sys.stderr
        if stream is not None:
            stream.write(text)
            stream.flush()
    except Exception:
        pass


def _writable(sock: socket.socket, deadline: Optional[float]) -> bool:
    """Whether ``sock`` can take a frame before ``deadline`` (``None``: as long as it takes)."""
    if deadline is None:
        if sock.gettimeout() is not None:
            sock.settimeout(None)
        return True
    # Drop a record before any byte of it is out, while we can: the
    # connection stays usable for the next one.
    poller = _poll()  # not select(): descriptors may be > 1023
    poller.register(sock, select.POLLOUT)
    if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
        return False
    sock.settimeout(max(0.0, deadline - time.monotonic()))
    return True
