"""3.12+'s warning that a multi-threaded process forks, when our listener is the only cause.

From 3.12 ``os.fork()`` warns (a ``DeprecationWarning``, in the parent, after
the fork) when the process has other threads. In the top of a tree the
listener is such a thread, and the warning would be about the library, not
the program. So the top keeps one filter at the front of ``warnings.filters``
whose message pattern is not a regular expression but an object
(:class:`OnlyOurThread`): the warnings machinery calls its ``match()`` with
the warning's text, and it matches only the warning about this process whose
only other thread is our listener, the threads counted as ``os.fork()``
counts them, by the kernel. Any other thread, a C extension's included,
leaves the warning to the program.

It is put there once, when the listener starts (:func:`keep_first`), and
again by the fork hook should the program have put filters in front of it
or reset them; nothing is done around each fork, which costs every fork page
faults (see ``_atfork``) and read the thread count even when nothing warned.
"""

from __future__ import annotations

import os
import re
import threading
import warnings

from forksafe_logging import _compat
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, Tuple

#: What the text of the warning starts with, as ``os.fork()`` and
#: ``os.forkpty()`` format it, up to the function's name.
_TEXT = "This process (pid=%d) is multi-threaded, use of "


def os_thread_count() -> int:
    """This process's threads, as the kernel counts them; 0 if unknown.

    The link count of ``/proc/self/task`` is the count plus two: one
    ``fstat()`` of a descriptor kept open, where the field ``os.fork()``
    reads from ``/proc/self/stat`` would cost a read and a parse. The
    descriptor names this process (``/proc/self`` is resolved when it is
    opened), so a forked child opens its own; the child's copy of its
    parent's is left open: closing it would be a cost in every fork.
    """
    pid = os.getpid()
    try:
        if state.proc_task[0] != pid:
            fd = os.open("/proc/self/task", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            state.proc_task = (pid, fd)
        count = os.fstat(state.proc_task[1]).st_nlink - 2
    except OSError:
        # Someone closed it (or the number is another file now): open anew
        # next time, and let the caller count Python threads this time.
        state.proc_task = (0, -1)
        return 0
    return count if count > 0 else 0


def python_thread_count() -> int:
    """The threads ``threading`` knows of: what ``os.fork()`` counts without the kernel's count."""
    active: Dict[int, threading.Thread] = threading._active  # type: ignore[attr-defined]
    limbo: Dict[Any, threading.Thread] = threading._limbo  # type: ignore[attr-defined]
    return len(active) + len(limbo)


class OnlyOurThread:
    """Our filter's message "pattern": it matches when our listener is the warning's only cause."""

    __slots__ = ("flags", "pattern", "pid", "text")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.text = _TEXT % pid
        # What code that reads the filters may expect of a compiled pattern.
        self.pattern = re.escape(self.text)
        self.flags = 0

    def match(self, text: str) -> bool:
        # Called for every warning that reaches the filter, whatever its
        # category: the cheap test first.
        if not text.startswith(self.text):
            return False
        server = state.server
        if server is None or server.pid != self.pid or not server.thread.is_alive():
            return False
        threads = os_thread_count() or python_thread_count()
        return threads <= 2

    def __repr__(self) -> str:
        return "<forksafe_logging: the fork warning when its listener is the only other thread>"


def keep_first(in_fork_hook: bool = False) -> None:
    """Put this process's filter at the front of ``warnings.filters``, once.

    Also taken out: a filter of another process (the parent of this forked
    child), which would never match here. ``in_fork_hook``: the filters'
    version is left alone, since bumping it takes the warnings module's lock
    from 3.14 (a fork hook takes no lock it could wait for); it only clears
    the modules' memory of warnings already shown, which may stay.
    """
    if not _compat.FORK_WARNS_ABOUT_THREADS:
        return
    pid = os.getpid()
    ours = state.fork_filter
    if ours is None or ours[1].pid != pid:
        ours = state.fork_filter = ("ignore", OnlyOurThread(pid), DeprecationWarning, None, 0)
    filters: Any = warnings.filters
    if filters and filters[0] is ours:
        return
    _take_out(filters)
    filters.insert(0, ours)
    if not in_fork_hook:
        warnings._filters_mutated()  # type: ignore[attr-defined]


def forget() -> None:
    """Take our filter out of ``warnings.filters`` (``uninstall()``)."""
    state.fork_filter = None
    if _take_out(warnings.filters):
        warnings._filters_mutated()  # type: ignore[attr-defined]


def _take_out(filters: Any) -> bool:
    # By type: list.remove() would compare every filter, regex and all; and
    # an inherited filter of the parent's is no longer state.fork_filter.
    before = len(filters)
    filters[:] = [f for f in filters if not isinstance(f[1], OnlyOurThread)]
    return len(filters) != before


def installed() -> bool:
    """Whether a filter of ours is in ``warnings.filters`` (for the ledger)."""
    return any(isinstance(f[1], OnlyOurThread) for f in warnings.filters)  # type: ignore[attr-defined]


if TYPE_CHECKING:
    Filter = Tuple[str, OnlyOurThread, type, None, int]
