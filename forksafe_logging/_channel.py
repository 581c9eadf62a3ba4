"""A process's own connection to the tree's listener, opened on first use.

One connection per process, so no lock is shared between processes on the
write path; a lock within the process keeps threads' frames whole. A record is
in the kernel's socket buffer when its logging call returns, so a SIGKILL
right after loses nothing. A forked child never writes on its parent's
connection: it opens its own.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import threading
import time

from forksafe_logging import _server, _streams, _wire

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    #: ``(top pid, key, socket path)``: how a process reaches a listener.
    Endpoint = Tuple[int, bytes, str]

#: Where descendants find the listener: ``"<top pid>:<key hex>:<socket path>"``.
#: Set by the top process; spawn and forkserver children and subprocesses
#: inherit it with the environment.
ENV_VAR = "FORKSAFE_LOGGING_LISTENER"


#: The listener of the tree this process belongs to, when it is not the top.
#: Set in a spawned child (from what its parent pickled), by an explicit
#: ``attach()``, or by :func:`tree` in a forked child of the top; copied by
#: fork.
_tree: Optional[Endpoint] = None


def tree() -> Optional[Endpoint]:
    """The listener of the tree this process belongs to, when it is not the top."""
    global _tree
    where = _tree
    if where is None:
        # A forked child of the top has the top's listener object, which is
        # never freed (see _server.Server): it is worked out here, on first
        # use, rather than in the fork hook, where each page written costs.
        server = _server._server
        if server is not None and server.pid != os.getpid():
            where = _tree = server.endpoint
    return where


def endpoint() -> Optional[Endpoint]:
    """The listener this process sends to: its own if it is the top, else its tree's."""
    server = _server.current()
    if server is not None:
        return server.endpoint
    return tree()


def join(where: Endpoint) -> None:
    """Belong to the tree whose listener is at ``where`` from now on."""
    global _tree
    _tree = where


#: :data:`ENV_VAR` as this process found it when the package was imported,
#: before a listener of its own could overwrite it.
_inherited = os.environ.get(ENV_VAR)


def from_environment(inherited: bool = False) -> Optional[Endpoint]:
    """The endpoint an ancestor published in :data:`ENV_VAR`, if any.

    ``inherited=True`` reads the value the process started with.
    """
    value = _inherited if inherited else os.environ.get(ENV_VAR)
    if not value:
        return None
    try:
        pid, key, address = value.split(":", 2)
        if address.startswith("@"):  # an abstract address: see publish()
            address = "\0" + address[1:]
        return int(pid), bytes.fromhex(key), address
    except ValueError:
        return None


def publish(where: Endpoint) -> None:
    """Let descendants started from now on find ``where`` (see :func:`attach`)."""
    pid, key, address = where
    # An environment variable cannot hold the NUL byte that starts an
    # abstract address: "@" stands for it, as in ss(8) and /proc/net/unix.
    if address.startswith("\0"):
        address = "@" + address[1:]
    os.environ[ENV_VAR] = "%d:%s:%s" % (pid, key.hex(), address)


def unpublish() -> None:
    os.environ.pop(ENV_VAR, None)


# Bound once, when the package is imported. gunicorn's gevent worker
# monkey-patches after the fork, in each worker: a cooperative socket behind
# this module's lock, made before the patching and so not cooperative, would
# let a greenlet yield inside send() with the lock held, and the next
# greenlet that logs would block the whole thread on it for ever. Imported
# after the patching, all three are gevent's, which agree with each other too.
_Socket = socket.socket
_Lock = threading.Lock
_poll = select.poll

#: Distinct call sites (logger, level, line, thread...) remembered per connection.
MAX_DEFINITIONS = 10000

#: Seconds before connecting again after the listener's backlog was full;
#: doubled after each such failure, up to the second.
FIRST_BACKOFF = 0.01
MAX_BACKOFF = 1.0


class ListenerGone(Exception):
    """The listener cannot be reached: the top process has died or stopped it."""


_PEERCRED = struct.Struct("3i")


def _check_owner(sock: socket.socket) -> None:
    """Refuse a listener that another user owns, before sending it anything.

    Any process on the machine can bind a name in the abstract namespace,
    and the name is public (``/proc/net/unix`` lists it): once the top has
    died, another user could take it over and receive what this process
    sends. The kernel tells who made the listening socket. Its owner must be
    this user, or root (gunicorn and uWSGI masters started as root hand
    their workers another user).
    """
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _, uid, _ = _PEERCRED.unpack(creds)
    if uid not in (0, os.geteuid()):
        raise PermissionError(
            "the listener's socket belongs to uid %d, not to this user (uid %d): refused"
            % (uid, os.geteuid())
        )


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the listener closed the connection")
        data += chunk
    return data


class Channel:
    """The connection of this process; reopened after a fork."""

    def __init__(self) -> None:
        self.lock = _Lock()
        self.pid = os.getpid()
        self.sock: Optional[socket.socket] = None
        #: What keeps ``sock`` from ever being freed (see :meth:`_connect`).
        self.pinned: List[Any] = []
        #: Definition numbers given on the current connection.
        self.numbers: Dict[_wire.StaticKey, int] = {}
        self.gone = False
        self.warned = False
        #: After connect() found the listener's backlog full: not before then.
        self.retry_at = 0.0
        self.backoff = FIRST_BACKOFF

    def _connect(self, timeout: Optional[float]) -> socket.socket:
        where = endpoint()
        if where is None:
            raise ListenerGone("no listener: install() was not called in a parent process")
        _, key, address = where
        with _server.fd_lock:  # see there: a child forked now must not keep it
            sock = _Socket(socket.AF_UNIX, socket.SOCK_STREAM)
            _server.child_closes.append(sock.fileno())
        try:
            # A busy listener accepts late: that is a slow listener, not a
            # dead one, so the wait is the caller's timeout (None: wait).
            sock.settimeout(timeout)
            sock.connect(address)
            if address.startswith("\0"):
                _check_owner(sock)
            challenge = _recv_exactly(sock, _server.CHALLENGE_SIZE)
            ours = os.urandom(_server.CHALLENGE_SIZE)
            sock.sendall(_server.answer(key, challenge) + ours)
            # Nothing is sent before the listener proves it holds the key:
            # whoever took the name over after the top died does not.
            proof = _recv_exactly(sock, _server.CHALLENGE_SIZE)
            if not _server.is_listener_proof(key, ours, proof):
                raise PermissionError("the listener could not prove it holds the tree's key")
            # A deeper buffer means fewer waits and wake-ups when the listener
            # is momentarily behind (measured: ~10% more throughput with four
            # workers on two cores). The kernel caps it at net.core.wmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        except BaseException:
            _server.close_listed(sock)
            raise
        # A forked child closes its copy by number, as it does the
        # listener's (see _server.child_closes), and this object, which the
        # child has too, must never close that number again: it is not freed
        # until this process closes it (a child never does: channel() gives
        # it a Channel of its own).
        self.pinned = _streams.pin(sock)
        return sock

    def send(
        self,
        key: _wire.StaticKey,
        frame: Callable[[int], bytes],
        timeout: Optional[float],
    ) -> bool:
        """Send one record; False if it was dropped after ``timeout`` seconds.

        ``key`` names the record's repeating fields; ``frame(number)`` makes
        its record frame. Raises :class:`ListenerGone` when the listener
        cannot be reached.
        """
        with self.lock:
            if self.gone:
                raise ListenerGone("the listener is gone")
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                try:
                    return self._send(key, frame, deadline)
                except (BrokenPipeError, ConnectionResetError):
                    # The listener closed this connection. It may still be
                    # alive (it drops a connection it cannot parse): once
                    # more on a new one, which tells. Nothing of this
                    # record was read, so it is not sent twice.
                    self._discard()
                    return self._send(key, frame, deadline)
            except socket.timeout:
                # Part of the frame may be out: this connection's stream is
                # spoiled. The listener counts the half frame; reconnect later.
                self._discard()
                return False
            except BlockingIOError:
                # connect() found the listener's backlog full (EAGAIN): a
                # busy listener, not a dead one. This record is dropped
                # (the caller asked not to wait); the next one tries again,
                # after a pause that doubles each time, up to a second.
                self._discard()
                self.retry_at = time.monotonic() + self.backoff
                self.backoff = min(self.backoff * 2, MAX_BACKOFF)
                return False
            except OSError as exc:
                self._discard()
                self.gone = True
                raise ListenerGone(str(exc)) from None
            except BaseException:
                # An exception from a signal handler (a task's time limit,
                # SIGALRM, KeyboardInterrupt) may leave part of a frame out:
                # the next frame would follow it and the listener would read
                # garbage. A new connection for the next record instead.
                self._discard()
                raise

    def _send(
        self, key: _wire.StaticKey, frame: Callable[[int], bytes], deadline: Optional[float]
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
            defined = len(self.numbers) + 1
            data = _wire.definition(defined, key) + frame(defined)
        else:
            defined = 0
            data = frame(number)
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
        return True

    def _discard(self) -> None:
        self.numbers.clear()
        sock, self.sock = self.sock, None
        if sock is not None:
            _server.close_listed(sock)
            self.pinned.clear()


_channel = Channel()


def channel() -> Channel:
    """This process's channel (a forked child gets a new one)."""
    global _channel
    ch = _channel
    if ch.pid != os.getpid():
        ch = _channel = Channel()
    return ch


def warn_once(ch: Channel, reason: str, write: Callable[[str], None]) -> None:
    if not ch.warned:
        ch.warned = True
        write(
            "forksafe_logging: the log listener of the process tree cannot be reached (%s); "
            "this process (pid %d) writes its records to stderr from now on\n"
            % (reason, os.getpid())
        )


def stderr_write(text: str) -> None:
    try:
        stream = sys.stderr
        if stream is not None:
            stream.write(text)
            stream.flush()
    except Exception:
        pass
