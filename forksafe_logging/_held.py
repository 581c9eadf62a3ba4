"""``install(warn_held_locks=True)``: a warning when a fork happens while a logging lock is held.

Off by default. The before-fork hook calls :func:`observe`, which only reads:
a lock's state (``locked()``, or an ``RLock``'s ``repr``, the one place its
owner shows), and, when a plain lock is held, where the other threads are
(``sys._current_frames()``). It takes no lock, logs nothing, waits for
nothing. The parent's after-fork hook calls :func:`warn` with what was seen,
once the fork is done and every lock released, so that the warning may go
anywhere, through ``logging`` too (``logging.captureWarnings``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from forksafe_logging import _compat, _reach, _structlog_locks


class HeldLockWarning(RuntimeWarning):
    """A fork happened while another thread held a lock of the logging configuration.

    Issued in the parent, right after such a fork, when
    :func:`~forksafe_logging.install` was called with
    ``warn_held_locks=True``. The message names each lock (as
    ``python -m forksafe_logging doctor`` does) and the thread that held it.

    .. versionadded:: 0.3.0
    """


#: ``(what, lock name, owner, candidates)``: ``what`` is the handler, queue or
#: structlog file the lock belongs to (``None``: logging's module lock);
#: ``owner`` the holder's name, or ``None`` for a plain lock, which does not
#: record it; then the names of threads that were in code taking such locks.
Held = Tuple[Any, str, Optional[str], Tuple[str, ...]]

_C_RLOCK = type(threading.RLock())
_OWNER = re.compile(r"owner=(\d+)")


def _holder(lock: Any) -> Optional[int]:
    """Who holds ``lock``: a thread's ident, 0 for a thread it does not name, None for nobody."""
    if isinstance(lock, _C_RLOCK):
        text = repr(lock)  # "<locked _thread.RLock object owner=N count=1 at 0x...>", 3.9 to 3.15
        if not text.startswith("<locked"):
            return None
        found = _OWNER.search(text)
        return int(found.group(1)) if found else 0
    if isinstance(lock, threading._PyRLock):  # type: ignore[attr-defined]
        owner: Optional[int] = lock._owner
        return owner
    try:
        return 0 if lock.locked() else None
    except Exception:  # a homemade lock without locked()
        return None


def observe(reach: Optional[_reach.Reach], acquired: Sequence[Any]) -> List[Held]:
    """The locks of the logging configuration that other threads hold now.

    ``acquired`` are the locks this fork's hook took itself; ``reach`` is
    its walk, or ``None`` if it made none (forward mode, or the module lock
    was busy).
    """
    if reach is None:
        reach = _reach.collect()
    ours = {id(lock) for lock in acquired}
    me = threading.get_ident()
    # What each lock belongs to, and the file of the code that takes it.
    candidates: List[Tuple[Any, str, Any, Optional[str]]] = [
        (None, "lock", _compat.logging_module_lock(), logging.__file__)
    ]
    for handler in reach.handlers:
        candidates.append((handler, "lock", handler.lock, logging.__file__))
    for handler, lock in reach.extra_locks:
        where = _module_file(type(handler).__module__)
        candidates.append((handler, "lock %r" % _reach.attribute_of(handler, lock), lock, where))
    for q in reach.queues:
        if _reach.is_thread_queue(q):
            candidates.append((q, "mutex", q.mutex, _module_file("queue")))
    structlog_file = _module_file("structlog._output") or _module_file("structlog._loggers")
    for stream, lock in _structlog_locks.write_locks():
        candidates.append((stream, "write lock", lock, structlog_file))

    held: List[Tuple[Any, str, int, Optional[str]]] = []
    for what, name, lock, code_file in candidates:
        if lock is None or id(lock) in ours:
            continue
        holder = _holder(lock)
        if holder is not None and holder != me:
            held.append((what, name, holder, code_file))
    if not held:
        return []
    threads = {t.ident: t.name for t in _compat.threads()}
    stacks = _stacks(me) if any(holder == 0 for _, _, holder, _ in held) else {}
    return [
        (
            what,
            name,
            threads.get(holder, "a thread that has ended") if holder else None,
            tuple(threads.get(i, "?") for i, files in stacks.items() if code_file in files),
        )
        for what, name, holder, code_file in held
    ]


def _module_file(name: str) -> Optional[str]:
    return getattr(sys.modules.get(name), "__file__", None)


def _stacks(me: int) -> Dict[int, Set[str]]:
    """The files of the code each other thread is in, innermost to outermost."""
    found: Dict[int, Set[str]] = {}
    for ident, innermost in sys._current_frames().items():
        if ident == me:
            continue
        files = found[ident] = set()
        frame: Any = innermost
        while frame is not None:
            files.add(frame.f_code.co_filename)
            frame = frame.f_back
    return found


def warn(held: List[Held]) -> None:
    """Issue the :class:`HeldLockWarning` for what :func:`observe` saw (after the fork)."""
    from forksafe_logging import _naming  # only now: its imports cost only when it warns

    lines = []
    for what, name, owner, candidates in held:
        if what is None:
            subject = "logging's module lock"
        elif name == "write lock":
            subject = "structlog's write lock for %s" % _naming.where_of(what)
        else:
            subject = "the %s of %s" % (name, _naming.where_of(what))
        if owner is not None:
            lines.append("- %s, held by thread %r" % (subject, owner))
        elif candidates:
            lines.append(
                "- %s, held by a thread it does not name; in its code then: %s"
                % (subject, ", ".join("thread %r" % c for c in candidates))
            )
        else:
            lines.append("- %s, held by a thread it does not name" % subject)
    warnings.warn(
        "this process forked while other threads held locks of its logging "
        "configuration:\n%s\n(python -m forksafe_logging doctor tells what install() "
        "does about each)" % "\n".join(lines),
        HeldLockWarning,
        # The frame that called os.fork() (the after-fork hook that calls us
        # is called from C, and makes no frame of its own).
        stacklevel=3,
    )
