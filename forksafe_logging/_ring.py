"""A sender's ring: memory the listener owns and shares with one sender, carrying its frames.

The listener makes one per authenticated connection (an anonymous file,
``memfd_create``, mapped by both ends; the descriptor travels with the
handshake's answer) and from then on the sender writes the bytes its socket
would have carried into the ring instead: a record is in memory the top
holds when its logging call returns, so a SIGKILL of the sender right after
loses nothing, and the record is not copied through the kernel (the
sender's one system call per record is a look for the socket's hang-up, see
_unconfirmed.put). The socket stays, for what else it did: the listener's
answers and confirmations, the sender's end (its death closes it), and a
wake-up frame when the listener sleeps.

Layout: three 8-byte words, each on its own cache line, then the data.
``W`` is how many bytes the sender has committed (written by the sender
only), ``R`` how many the listener has taken (written by the listener only),
``FLAG`` whether the listener sleeps (:data:`IDLE`: a sender that commits
must wake it), is about to look at the ring for the last time (:data:`STOPPING`)
or has stopped reading it (:data:`CLOSED`: ``R`` is final). Both counters only
grow; a byte's place is its count modulo the data's size.

Why it holds together (see docs/how-it-works.md, "The ring"): the words are
read and written through a native ``Q`` memoryview, one aligned 8-byte load
or store, which x86-64 makes atomic; x86-64 keeps a store after the stores
before it and a load after the loads before it, so bytes committed by ``W``
are there when ``W`` is seen; the one reordering it allows (a load before an
earlier store) is closed by a locked instruction between the commit and the
look at ``FLAG``, and between setting ``FLAG`` and the last look at ``W``.
Elsewhere (other machines), no ring: the socket carries everything.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import socket
import struct
import sys
import time

from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Tuple, Union

#: The ring's data, in bytes (a power of two): as deep as the socket
#: buffer the channel asked for before, which measured best.
DATA_SIZE = 1 << 20
_DATA = 4096  # the words' page
TOTAL_SIZE = _DATA + DATA_SIZE
_MASK = DATA_SIZE - 1
# The words' indices, in 8-byte words: each on its own cache line.
_W, _R, _FLAG = 0, 8, 16
BUSY, IDLE, STOPPING, CLOSED = 0, 1, 2, 3


def _words(ring: mmap.mmap) -> memoryview:
    """The ring's words, read and written as one aligned 8-byte load or store each.

    A memoryview of native ``Q``: its item access is one 8-byte ``memcpy``.
    Not ``struct.pack_into``, which first zeroes the bytes it packs into: a
    reader at that moment would see a count of 0.
    """
    return memoryview(ring)[:_DATA].cast("Q")


#: Switched off by FORKSAFE_LOGGING_RING=0 in the top's environment.
_SWITCH = "FORKSAFE_LOGGING_RING"
_MACHINES = ("x86_64", "amd64", "AMD64")

#: A sender waiting for room looks again after this long, doubling up to
#: the second figure (it is woken sooner by what the socket brings).
_FIRST_WAIT = 0.0005
_LONGEST_WAIT = 0.01


def supported() -> bool:
    """Whether the listener of this process may hand out rings."""
    if os.environ.get(_SWITCH, "1") == "0":
        return False
    if not hasattr(os, "memfd_create") or not hasattr(fcntl, "F_ADD_SEALS"):
        return False  # F_ADD_SEALS: 3.9+ on Linux
    # A 32-bit Python on a 64-bit kernel copies an 8-byte word in two halves:
    # a reader could see half of a count.
    return os.uname().machine in _MACHINES and sys.maxsize > 2**32


# On 3.13+, a mapping need not keep a descriptor of its own: without it the
# top holds one descriptor per sender (the socket), not two.
_UNTRACKED: Dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


def _map(fd: int) -> mmap.mmap:
    return mmap.mmap(fd, TOTAL_SIZE, **_UNTRACKED)


#: Every end of a ring this process maps, by id. A forked child unmaps its
#: copies (:func:`unmap_inherited`): a child of the top would otherwise keep
#: every sender's ring alive as long as it lives, long after the sender
#: ended; a recycled pool would pin rings by the square of its size.
mapped: Dict[int, Union[Reader, Writer]] = {}


def unmap_inherited() -> None:
    """In a forked child: unmap every ring the parent had mapped, never writing to one.

    The rings are the parent's connections', which this child never uses
    (its objects are pid-checked). A mapping a frozen thread of the parent
    was reading through stays: it cannot be unmapped while viewed.
    """
    for end in list(mapped.values()):
        end.unmap()


def _let_go(ring: mmap.mmap, *views: memoryview) -> None:
    try:
        for view in views:
            view.release()
        ring.close()
    except BufferError:
        pass  # still viewed, by a thread a fork left behind: it stays mapped


def create() -> Tuple[int, mmap.mmap]:
    """A new ring: its descriptor (for the sender; the caller closes it) and its mapping.

    ``OSError`` if the machine has no room for it.
    """
    fd = os.memfd_create(  # type: ignore[attr-defined]
        "forksafe-logging-ring",
        os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING,  # type: ignore[attr-defined]
    )
    try:
        os.ftruncate(fd, TOTAL_SIZE)
        # Sealed at its size: a sender that shrank the file would make the
        # top's next look at the ring a SIGBUS, and kill it.
        fcntl.fcntl(
            fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        )
        return fd, _map(fd)
    except BaseException:
        os.close(fd)
        raise


_FD = struct.Struct("i")


def answer(sock: socket.socket, data: bytes, register: Callable[[Reader], None]) -> None:
    """Send the handshake's answer ``data`` with a new ring; ``register`` it first.

    The answer alone if no ring can be made (out of memory or descriptors):
    the connection then carries the frames. ``OSError``: the send failed.
    """
    with state.fd_lock:  # a child forked meanwhile must not keep the descriptor
        try:
            fd, ring = create()
        except OSError:
            sock.send(data)
            return
        try:
            register(Reader(ring))
            sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _FD.pack(fd))])
        finally:
            os.close(fd)


def open_received(fd: int) -> mmap.mmap:
    """Map the ring whose descriptor came with the listener's (proven) answer."""
    if os.fstat(fd).st_size != TOTAL_SIZE:
        raise ConnectionError("the listener's ring is not of the expected size")
    return _map(fd)


def _real_lock() -> Any:
    """An OS lock, even where gevent has patched ``_thread`` (its lock is Python code:
    no locked instruction, no fence). Taken with ``acquire(False)``: never blocks a greenlet.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return monkey.get_original("_thread", "allocate_lock")()
    import _thread

    return _thread.allocate_lock()


class _Fence:
    """A full memory barrier: a locked instruction, from an uncontended lock.

    Each end has its own, used under a lock that keeps the end to one
    thread (the channel's; the listener is one thread), so the acquire
    never fails (a failed try need not write the lock) and never waits.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _real_lock()

    def __call__(self) -> None:
        if self._lock.acquire(False):
            self._lock.release()


class Reader:
    """The listener's end of one ring."""

    __slots__ = ("_map", "_view", "_words", "r")

    def __init__(self, ring: mmap.mmap) -> None:
        self._map = ring
        self._view = memoryview(ring)
        self._words = _words(ring)
        mapped[id(self)] = self
        #: The listener's own count of what it took: ``R`` in the ring is
        #: for the sender, whose writes the listener never trusts.
        self.r = 0

    def take(self, into: bytearray) -> bool:
        """Append what the sender has committed since the last take; False: garbage."""
        words = self._words
        w: int = words[_W]
        r = self.r
        if w == r:
            return True
        if not r < w <= r + DATA_SIZE:
            return False  # not a count the sender could have written
        start = r & _MASK
        end = start + (w - r)
        view = self._view
        if end <= DATA_SIZE:
            into += view[_DATA + start : _DATA + end]
        else:
            into += view[_DATA + start :]
            into += view[_DATA : _DATA + end - DATA_SIZE]
        self.r = w
        words[_R] = w  # the sender may write there again
        return True

    def behind(self) -> bool:
        """Whether the sender committed bytes the listener has not taken (any thread).

        Against the listener's own count: ``R`` in the ring is the sender's to spoil.
        """
        try:
            return bool(self._words[_W] != self.r)
        except ValueError:  # closed by the listener meanwhile
            return False

    def flag(self, value: int) -> None:
        self._words[_FLAG] = value

    def close(self) -> None:
        self.flag(CLOSED)
        self.unmap()

    def unmap(self) -> None:
        mapped.pop(id(self), None)
        _let_go(self._map, self._words, self._view)


def sleep(readers: Tuple[Reader, ...], fence: Callable[[], None]) -> bool:
    """Mark the listener asleep in every ring; False (and awake again) if one has bytes waiting.

    Any byte committed after this returns True brings a wake-up byte.
    """
    for reader in readers:
        reader.flag(IDLE)
    fence()
    for reader in readers:
        if reader.behind():
            awake(readers)
            return False
    return True


def close_all(readers: Tuple[Reader, ...], fence: Callable[[], None]) -> None:
    """Mark every ring closed, before the listener's last look at them.

    A sender that commits after that look sees the mark, and settles
    (_channel): what the listener took is confirmed, the rest shown.
    """
    for reader in readers:
        reader.flag(STOPPING)
    fence()


def awake(readers: Tuple[Reader, ...]) -> None:
    for reader in readers:
        reader.flag(BUSY)


def listener_fence() -> Callable[[], None]:
    return _Fence()


class Writer:
    """A sender's end of its ring. Used under the channel's lock only.

    ``wait(seconds)`` waits at most that long for news from the listener
    (the socket's confirmations), and raises ``BrokenPipeError`` if the
    connection has ended: a sender waiting for room then stops waiting.
    ``wake()`` sends the wake-up byte.
    """

    __slots__ = ("_fence", "_map", "_wait", "_wake", "_words", "w")

    def __init__(
        self,
        ring: mmap.mmap,
        wait: Callable[[float], None],
        wake: Callable[[], None],
    ) -> None:
        self._map = ring
        self._wait = wait
        self._wake = wake
        self._fence = _Fence()
        self._words = _words(ring)
        self.w: int = self._words[_W]
        mapped[id(self)] = self

    def unmap(self) -> None:
        """Let go of the ring (its connection is over, or this is a forked child)."""
        mapped.pop(id(self), None)
        _let_go(self._map, self._words)

    def _room(self) -> int:
        room: int = DATA_SIZE - (self.w - self._words[_R])
        return min(max(room, 0), DATA_SIZE)

    def put(self, data: bytes, deadline: Optional[float]) -> bool:
        """Commit ``data`` to the ring; False if dropped at ``deadline`` with no byte of it out.

        Waits for room as a socket's ``sendall()`` would (``deadline`` None:
        as long as it takes); ``socket.timeout`` if the deadline comes with
        part of it committed (the stream is spoiled, as a socket's would be).
        """
        size = len(data)
        w = self.w
        at = _DATA + (w & _MASK)
        # Most records: room for all of it, before the ring's end.
        if at + size <= TOTAL_SIZE and size <= DATA_SIZE - (w - self._words[_R]) <= DATA_SIZE:
            self._map[at : at + size] = data
            self.w = w = w + size
            self._words[_W] = w  # committed
            return True
        if self._room() < min(size, DATA_SIZE) and not self._room_for(
            min(size, DATA_SIZE), deadline
        ):
            return False
        ring = self._map
        done = 0
        while done < size:
            room = self._room()
            if not room:
                if not self._room_for(1, deadline):
                    raise socket.timeout("the listener took no part of the ring in time")
                continue
            chunk = min(room, size - done)
            at = _DATA + (self.w & _MASK)
            first = min(chunk, TOTAL_SIZE - at)
            if first == size:
                ring[at : at + size] = data
            else:
                ring[at : at + first] = data[done : done + first]
                if first < chunk:
                    ring[_DATA : _DATA + chunk - first] = data[done + first : done + chunk]
            done += chunk
            self.w += chunk
            self._words[_W] = self.w  # committed
        return True

    def look(self) -> int:
        """After a commit: :data:`BUSY`, :data:`IDLE` (wake the listener), :data:`STOPPING`...

        ...or :data:`CLOSED`.
        """
        self._fence()
        return int(self._words[_FLAG])

    def untaken(self) -> bool:
        """Once :data:`CLOSED`: whether the listener left the last commit (or part of it) unread."""
        return bool(self._words[_R] < self.w)

    def _room_for(self, need: int, deadline: Optional[float]) -> bool:
        self._wake()  # whatever the flag says: the listener must come
        pause = _FIRST_WAIT
        while self._room() < need:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                pause = min(pause, left)
            self._wait(pause)
            pause = min(pause * 2, _LONGEST_WAIT)
        return True
