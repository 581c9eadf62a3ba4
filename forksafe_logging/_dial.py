"""A sender's connection to the listener: connected, the handshake done, before any record.

The handshake (:mod:`forksafe_logging._endpoint`) is one round trip: the
sender sends a random nonce with its MAC keyed with the tree's key, at once
(not waiting for the listener to accept), and the listener answers with a
MAC of the nonce keyed apart, so that no record is sent to a socket that
took the listener's name over after the top died. On an abstract address,
whose name any local user can bind, the socket's owner is checked first.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from forksafe_logging import _endpoint, _ring
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    import mmap
    from typing import Optional, Tuple

# Bound when the package is imported: see _channel (gevent). The sleep too:
# it runs under the channel's lock, and eventlet's monkey_patch() leaves that
# lock a real one, which every greenthread of the process holds as one (one
# OS thread): a greenthread yielding in the sleep let the next one that logs
# take the lock as its own (_channel.reentered) and send in between.
_Socket = socket.socket
_sleep = time.sleep

_PEERCRED = struct.Struct("3i")

#: Seconds before connecting again after the listener's backlog was full;
#: doubled after each such failure, up to the second.
FIRST_BACKOFF = 0.01
MAX_BACKOFF = 1.0


class Backoff:
    """When a sender may connect again after the listener's backlog was full."""

    __slots__ = ("at", "delay")

    def __init__(self) -> None:
        self.at = 0.0  # no pause
        self.delay = FIRST_BACKOFF

    def wait(self, deadline: Optional[float]) -> bool:
        """Wait out the pause; ``False``, at once, if it would end after ``deadline``."""
        if self.at:
            wait = self.at - time.monotonic()
            if wait > 0:
                if deadline is not None and deadline - time.monotonic() < wait:
                    return False
                _sleep(wait)  # the caller waits for a busy listener anyway
        return True

    def refused(self) -> None:
        """The backlog was full: a pause before the next try, twice the last one."""
        self.at = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, MAX_BACKOFF)

    def connected(self) -> None:
        self.at = 0.0
        self.delay = FIRST_BACKOFF


def check_owner(sock: socket.socket) -> None:
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


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the listener closed the connection")
        data += chunk
    return data


def dial(
    where: Tuple[int, bytes, str], timeout: Optional[float]
) -> Tuple[socket.socket, Optional[mmap.mmap]]:
    """A connection to the listener at ``where``, the handshake done (closed on failure).

    With it, the ring the listener sent with its answer (:mod:`~forksafe_logging._ring`),
    if it sent one. ``timeout``: for the connection and each step of the
    handshake. A busy listener accepts late: that is a slow listener, not a
    dead one, so the wait is the caller's (``None``: wait).
    """
    _, key, address = where
    with state.fd_lock:  # see there: a child forked now must not keep it
        sock = _Socket(socket.AF_UNIX, socket.SOCK_STREAM)
        state.child_closes.append(sock.fileno())
    ring_fd: Optional[int] = None
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        if address.startswith("\0"):
            check_owner(sock)
        nonce, hello = _endpoint.hello(key)
        sock.sendall(hello)
        # No record is sent before the listener proves it holds the key:
        # whoever took the name over after the top died does not. Nor
        # before the listener has taken the connection in: from then on, a
        # record of the top waits for this connection's records (_turns).
        # Nor is what came with the answer mapped before.
        proof, ring_fd = _answer(sock)
        if not _endpoint.is_listener_proof(key, nonce, proof):
            raise PermissionError("the listener could not prove it holds the tree's key")
        ring = None if ring_fd is None else _ring.open_received(ring_fd)
        # A deeper buffer means fewer waits and wake-ups when the listener
        # is momentarily behind (measured: ~10% more throughput with four
        # workers on two cores). The kernel caps it at net.core.wmem_max.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    except BaseException:
        _endpoint.close_listed(sock)
        raise
    finally:
        if ring_fd is not None:
            _endpoint.close_listed_fd(ring_fd)
    return sock, ring


_FD = struct.Struct("i")


def _answer(sock: socket.socket) -> Tuple[bytes, Optional[int]]:
    """The listener's answer to the hello, and the ring's descriptor that came with it, if one did.

    Waited for outside ``state.fd_lock`` (which a fork waits for), received
    under it and listed in ``state.child_closes``: a child forked before
    the caller closes it must not keep the ring alive. Closed here on failure.
    """
    sock.recv(1, socket.MSG_PEEK)  # the wait, with the socket's timeout
    ring_fd = None
    with state.fd_lock:
        data, ancillary, _, _ = sock.recvmsg(
            _endpoint.CHALLENGE_SIZE,
            socket.CMSG_SPACE(_FD.size),
            socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC,
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                whole = len(payload) - len(payload) % _FD.size
                for (fd,) in _FD.iter_unpack(payload[:whole]):
                    if ring_fd is None:
                        ring_fd = fd
                        state.child_closes.append(fd)
                    else:
                        os.close(fd)  # never sent so: one ring per connection
    try:
        if not data:
            raise ConnectionResetError("the listener closed the connection")
        return data + recv_exactly(sock, _endpoint.CHALLENGE_SIZE - len(data)), ring_fd
    except BaseException:
        if ring_fd is not None:
            _endpoint.close_listed_fd(ring_fd)
        raise
