"""Give a forked child its own stream object over an inherited file descriptor.

A buffered file object (``io.BufferedWriter``, under every text stream) has a
C-level lock that nothing reinitializes after ``fork()`` (CPython gh-84579). If
a thread of the parent was inside ``write()`` at the fork, for instance blocked
on a full pipe, the child's copy is locked forever, and whatever that thread had
buffered is the parent's to write. So the child gets a fresh object over the
same descriptor and the old one is *abandoned*: never flushed, never closed,
never even deallocated, because deallocation flushes (and at interpreter exit a
lock that cannot be taken within a second is a fatal error).
"""

from __future__ import annotations

import gc
import io
import sys

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


def _pin_template() -> None:
    """Never called: its code object is the template :func:`abandon` copies."""


#: Whether code objects are invisible to the cycle collector (CPython 3.9 to
#: 3.15: they are not tracked). Checked, not assumed.
_CODE_UNTRACKED = not gc.is_tracked(_pin_template.__code__)

#: What :func:`abandon` keeps when it cannot pin: alive until interpreter
#: exit, not past it.
_abandoned: List[Any] = []


def pin(obj: Any) -> List[Any]:
    """Keep ``obj`` alive, so it is never flushed or closed, until the holder returned is cleared.

    Not even while the interpreter shuts down, when module globals are
    cleared. The holder, a list holding ``obj``, and a code object whose
    constants hold the list form a cycle that the collector cannot see: it
    does not track code objects, so it takes the code's reference to the
    list for one from outside. What ``Py_IncRef`` through ctypes would do,
    without loading ctypes and libffi into a process (each library mapped
    slows every fork). ``holder.clear()`` breaks the cycle.
    """
    holder = [obj]
    if _CODE_UNTRACKED:
        holder.append(_pin_template.__code__.replace(co_consts=(holder,)))
    else:  # pragma: no cover - an interpreter whose collector tracks code
        _abandoned.append(holder)
    return holder


def abandon(obj: Any) -> None:
    """Keep ``obj`` alive for the rest of the process (see :func:`pin`)."""
    pin(obj)


def descriptor(stream: Any) -> Optional[int]:
    """The file descriptor under a text stream with a buffer (and its C lock).

    ``None`` for streams without one (``io.StringIO``, custom objects, a
    closed file): they have no inherited C lock to worry about.
    """
    if not isinstance(stream, io.TextIOWrapper):
        return None
    try:
        # fileno() does not take the buffered object's lock.
        return stream.fileno()
    except (OSError, ValueError):
        return None


def fresh_stream(old: Any) -> Optional[Any]:
    """A new text stream with ``old``'s settings over ``old``'s descriptor.

    Returns ``None`` when ``old`` has no :func:`descriptor`.
    """
    fd = descriptor(old)
    if fd is None:
        return None
    return io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(fd, "w", closefd=False)),
        encoding=old.encoding,
        errors=old.errors,
        line_buffering=old.line_buffering,
        write_through=old.write_through,
    )


def replace_stream(handler: Any, replaced: Dict[int, Any]) -> None:
    """Point ``handler.stream`` at a fresh object; abandon the inherited one.

    ``replaced`` maps ``id(old)`` to its replacement, so handlers that shared
    a stream in the parent share one in the child. ``sys.stdout`` and
    ``sys.stderr`` are rebound too when they are the same object, or
    tracebacks and ``print()`` in the child would block on the lock.
    """
    old = getattr(handler, "stream", None)
    if old is None:
        return
    new = replaced.get(id(old))
    if new is None:
        new = fresh_stream(old)
        if new is None:
            return
        replaced[id(old)] = new
        abandon(old)
    handler.stream = new
    if sys.stderr is old:
        sys.stderr = new
    if sys.stdout is old:
        sys.stdout = new
