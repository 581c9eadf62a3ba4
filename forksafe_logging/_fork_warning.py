"""3.12+'s warning that a multi-threaded process forks, when our listener is the only cause.

From 3.12 ``os.fork()`` warns (a ``DeprecationWarning``) in the parent when
the process has other threads. In the top of a tree the listener is such a
thread, and the warning would be about the library, not the program: the
fork hooks put a filter in front of ``warnings.filters`` for the forks where
the listener is the only other thread, and take it out after the fork (see
:data:`~forksafe_logging._compat.FORK_WARNS_AFTER_PARENT_HOOKS` for when).
The threads are counted as ``os.fork()`` counts them, by the kernel.
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
    from typing import Any, Dict


#: The message of the 3.12+ warning, as ``os.fork()`` formats it.
_FORK_WARNING = re.compile(
    r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"
)
_QUIET_FORK = ("ignore", _FORK_WARNING, DeprecationWarning, None, 0)


def os_thread_count() -> int:
    """The count 3.12+ uses on Linux: field 20 of ``/proc/self/stat``; 0 if unknown.

    Read at every fork of a process with a listener, so through a descriptor
    kept open (one ``pread`` instead of an open, a read and a close, and no
    file object). It names this process's pid (``/proc/self`` is resolved
    when it is opened), so a forked child opens its own.
    """
    pid = os.getpid()
    try:
        if state.proc_stat[0] != pid:
            fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
            # A child's copy of its parent's descriptor is left open: closing
            # it is a cost in a fork hook, and it stays one descriptor.
            state.proc_stat = (pid, fd)
        stat = os.pread(state.proc_stat[1], 4096, 0)
        return int(stat[stat.rindex(b")") + 2 :].split()[17])
    except (OSError, ValueError, IndexError):
        # Someone closed it (or the number is another file now): open anew
        # next time, and let the caller count Python threads this time.
        state.proc_stat = (0, -1)
        return 0


def quiet_fork_warning(our_threads: int) -> bool:
    """Silence 3.12+'s multi-threaded-fork warning if our threads are the only cause.

    ``os.fork()`` warns in the parent after the fork, so the filter is added
    in the ``before`` hook and removed by :func:`unquiet_fork_warning` (see
    :data:`~forksafe_logging._compat.FORK_WARNS_AFTER_PARENT_HOOKS` for
    when). Returns whether it was added.
    """
    if not _compat.FORK_WARNS_ABOUT_THREADS or our_threads <= 0:
        return False
    threads = os_thread_count()
    if threads <= 0:
        active: Dict[int, threading.Thread] = threading._active  # type: ignore[attr-defined]
        threads = len(active)
    if threads - our_threads > 1:
        return False  # someone else's thread: the warning is theirs to get
    warnings.filters.insert(0, _QUIET_FORK)  # type: ignore[attr-defined]
    state.quiet_filters += 1
    warnings._filters_mutated()  # type: ignore[attr-defined]
    return True


def unquiet_fork_warning(every: bool = False) -> None:
    """Remove one filter :func:`quiet_fork_warning` added (``every``: all of them).

    They are near the front, where it inserts them: the scan stops once it
    has found as many as were counted (every filter it looks at costs a page
    fault in a child).
    """
    if not state.quiet_filters:
        return
    filters: Any = warnings.filters
    wanted = state.quiet_filters if every else 1
    found = 0
    index = 0
    # By identity: list.remove() would compare every filter, regex and all.
    while found < wanted and index < len(filters):
        if filters[index] is _QUIET_FORK:
            del filters[index]
            found += 1
        else:
            index += 1
    # Fewer than counted: someone reset the filters (warnings.resetwarnings()).
    state.quiet_filters = state.quiet_filters - found if found == wanted else 0
    if found:
        warnings._filters_mutated()  # type: ignore[attr-defined]
