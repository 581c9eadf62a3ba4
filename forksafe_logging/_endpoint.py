"""The tree's endpoint: where its listener is, and how each side proves it belongs.

Holds no listener state, so that both ends import it: the listener
(:mod:`forksafe_logging._server`) binds the address; a sender
(:mod:`forksafe_logging._channel`) opens each connection with a random
nonce and its MAC, and the listener answers with a MAC of the nonce keyed
apart. Also the bookkeeping of the descriptors a forked child
must close, which both ends open.
"""

from __future__ import annotations

import os
import socket
import stat
import sys

from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Optional, Tuple

CHALLENGE_SIZE = 32
#: sun_path holds 108 bytes on Linux, with the terminating NUL.
_MAX_SOCKET_PATH = 107


# Keyed BLAKE2b is a MAC by design. From the private modules when they are
# there: hashlib and hmac would load OpenSSL's libcrypto into every process
# of the tree, and each shared library mapped makes every fork slower.
try:
    from _blake2 import blake2b as _blake2b
    from _operator import _compare_digest as compare_digest
except ImportError:  # pragma: no cover - an interpreter built without them
    from hashlib import blake2b as _blake2b
    from hmac import compare_digest  # type: ignore[no-redef]


#: What a sender sends first on a connection: a nonce, and its MAC.
HELLO_SIZE = 2 * CHALLENGE_SIZE


def answer(key: bytes, nonce: bytes) -> bytes:
    """A sender's MAC of ``nonce``: it proves knowledge of ``key``."""
    return _blake2b(nonce, key=key, digest_size=32).digest()


def hello(key: bytes) -> Tuple[bytes, bytes]:
    """A new connection's nonce, and the hello that opens it: the nonce and its MAC."""
    nonce = os.urandom(CHALLENGE_SIZE)
    return nonce, nonce + answer(key, nonce)


def hello_nonce(key: bytes, data: bytes) -> Optional[bytes]:
    """The nonce of the hello ``data`` (:data:`HELLO_SIZE` bytes); None if its MAC is wrong.

    Compared in constant time.
    """
    nonce = data[:CHALLENGE_SIZE]
    return nonce if compare_digest(data[CHALLENGE_SIZE:], answer(key, nonce)) else None


def listener_answer(key: bytes, nonce: bytes) -> bytes:
    """The listener's proof, to a sender's nonce, that it holds ``key``.

    Keyed apart from :func:`answer` (a different personalization), so that
    what a sender computes never serves as the listener's proof.
    """
    return _blake2b(nonce, key=key, digest_size=32, person=b"listener").digest()


def is_listener_proof(key: bytes, nonce: bytes, proof: bytes) -> bool:
    """Whether ``proof`` is the listener's answer to ``nonce`` (in constant time)."""
    return compare_digest(proof, listener_answer(key, nonce))


#: Where the listener's socket is. On Linux, a name in the abstract socket
#: namespace: it has no entry in any filesystem, and the kernel removes it
#: with the last descriptor of the socket, whatever way the top process
#: exits (SIGKILL and crashes too), so nothing is ever left behind. Anyone
#: on the machine may connect to such a socket: the challenge keeps out whoever
#: lacks the tree's key, and a sender checks the listener's owner before it
#: sends anything (see _channel). Elsewhere, a socket file in a directory only
#: this user can enter, with the directories of dead listeners swept away.
ABSTRACT = sys.platform.startswith("linux")

_DIRECTORY_PREFIX = "forksafe-logging-"


def _abstract_address(pid: int) -> str:
    return "\0%s%d-%s" % (_DIRECTORY_PREFIX, pid, os.urandom(8).hex())


def _private_directory(under: Optional[str] = None) -> str:
    """A new directory that only this user can enter (mode 0700), for the socket.

    Under ``under``, else the first writable of the places ``tempfile``
    looks at (honouring ``tempfile.tempdir`` if the program has imported it).
    Not ``tempfile.mkdtemp()`` itself: importing tempfile imports shutil, bz2,
    lzma and random into every process of the tree, and every module a
    process has imported makes each of its forks slower. The name carries
    this process's pid, so that a later listener can tell that its owner is
    dead (see :func:`_sweep`).
    """
    if under is not None:
        places = [under]
    else:
        tempfile = sys.modules.get("tempfile")
        chosen = getattr(tempfile, "tempdir", None)
        places = [chosen] if chosen else []
        places += [os.environ.get(name, "") for name in ("TMPDIR", "TEMP", "TMP")]
        places += ["/tmp", "/var/tmp", "/usr/tmp", os.getcwd()]
    name = "%s%d-" % (_DIRECTORY_PREFIX, os.getpid())
    for place in places:
        if not place or not _safe_parent(place):
            continue
        for _ in range(100):
            path = os.path.abspath(os.path.join(place, name + os.urandom(6).hex()))
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            except OSError:
                break  # not there, not writable: the next place
            _sweep(place)
            return path
    raise FileNotFoundError(
        "no place for the listener's socket: none of TMPDIR, TEMP, TMP, /tmp, /var/tmp, "
        "/usr/tmp or the working directory is writable and safe (a directory anyone may "
        "write to needs the sticky bit)"
    )


def _safe_parent(place: str) -> bool:
    """Whether only its owner can rename what this user makes in ``place``.

    In a directory anyone may write to without the sticky bit (``/tmp``
    has it), another user could rename our socket's directory away and put
    one of their own under its name.
    """
    try:
        mode = os.stat(place).st_mode
    except OSError:
        return False
    return not (mode & stat.S_IWOTH) or bool(mode & stat.S_ISVTX)


def _sweep(place: str) -> None:
    """Remove the socket directories in ``place`` that this user's dead listeners left.

    A listener removes its directory when it stops, but a process killed
    (SIGKILL, a crash, ``os._exit``) cannot: the next listener started on
    the machine by the same user removes it instead.
    """
    uid = os.geteuid()
    try:
        names = os.listdir(place)
    except OSError:
        return
    for name in names:
        if not name.startswith(_DIRECTORY_PREFIX):
            continue
        pid_text = name[len(_DIRECTORY_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        path = os.path.join(place, name)
        try:
            if os.lstat(path).st_uid != uid:
                continue
            os.kill(int(pid_text), 0)
            continue  # its owner is alive
        except ProcessLookupError:
            pass
        except OSError:
            continue  # alive but not ours to signal, or gone meanwhile
        try:
            for entry in os.listdir(path):
                os.unlink(os.path.join(path, entry))
            os.rmdir(path)
        except OSError:
            pass


def bind() -> Tuple[socket.socket, str, Optional[str]]:
    """The listening socket, its address, and its directory (``None`` if abstract)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if ABSTRACT:
            address = _abstract_address(os.getpid())
            sock.bind(address)
            return sock, address, None
        directory = _private_directory()
        address = os.path.join(directory, "listener.sock")
        if len(os.fsencode(address)) > _MAX_SOCKET_PATH:
            # A long TMPDIR: Unix socket paths are limited to 107 bytes.
            os.rmdir(directory)
            directory = _private_directory("/tmp")
            address = os.path.join(directory, "listener.sock")
        sock.bind(address)
        return sock, address, directory
    except BaseException:
        sock.close()
        raise


# state.child_closes: descriptors of this process's listener, which a
# forked child closes its copies of (in ``_atfork.after_fork_in_child``).
# Another thread may be changing it at a fork: a number is added once it is
# open and removed before it is closed, so whatever the child sees, it
# closes only descriptors that are ours.
#
# state.fd_lock: held from the moment such a descriptor is opened until its
# number is in ``state.child_closes``, and taken by the before-fork hook: so no
# fork happens in between. (A child given the listener's end of a sibling's
# connection would keep it open after the sibling's parent died, and the
# sibling would never learn that nobody reads it.) Only ever held for a few
# calls that do not block. Re-entrant: on 3.14 an exception from a signal
# handler can leave it taken by the thread it interrupted (see
# _compat.reclaim), which must not then wait for itself.

#: How long a fork waits for ``state.fd_lock``; past it, it goes ahead.
FD_LOCK_TIMEOUT = 1.0


def forget_descriptor(fd: int) -> None:
    try:
        state.child_closes.remove(fd)
    except ValueError:
        pass


def close_listed_fd(fd: int) -> None:
    """Close a descriptor whose number is in ``state.child_closes``, and take it out."""
    with state.fd_lock:
        forget_descriptor(fd)
        os.close(fd)


def close_listed(sock: socket.socket) -> None:
    """Close a socket whose number is in ``state.child_closes``, and take it out."""
    with state.fd_lock:  # a child forked in between would keep it open
        forget_descriptor(sock.fileno())  # before the number can be reused
        sock.close()
