"""In a forked child, ``"inherit"`` and ``"reset"`` modes: make what it inherited usable.

Called by the child's fork hook (``_atfork.after_fork_in_child``), with the
same rules: nothing here logs, waits or starts a thread, and nothing is
released, only re-initialized. Locks of handlers the standard library does
not re-initialize, and of queues, are re-initialized; a stream a thread of
the parent was writing to is replaced; buffers the parent will flush are
emptied; an inherited ``QueueListener`` restarts on first use; sockets
reconnect; and ``"reset"`` drops the handlers and applies the child's
configuration.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import logging
import logging.handlers
import os
import sys
import threading

from forksafe_logging import _compat, _reach, _settings, _streams

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


def repair_inherited(settings: _settings.Settings, plan: Optional[Any]) -> None:
    """``"inherit"`` and ``"reset"``: make what the child inherited usable, then apply the mode.

    ``plan``: what this fork's ``before`` hook did (``_atfork._Plan``), or
    ``None`` if it did not run in this thread.
    """
    if plan is not None and plan.complete and plan.reach is not None:
        # The walk made before the fork is in this memory too.
        reach = plan.reach
        # The stdlib has re-initialized the locks of its own handler classes.
        relock = reach.custom
        suspects = plan.busy_handlers
    else:
        # Our before hook did not run (uWSGI runs only the child hook) or
        # could not take the module lock: any handler may have been mid-write.
        reach = _reach.collect(in_child=True)
        relock = suspects = reach.handlers
    for handler in relock:
        if handler.lock is not None:
            _compat.reinit_lock(handler.lock)
    replaced: Dict[int, Any] = {}
    for handler in suspects:
        _streams.replace_stream(handler, replaced)
    for handler in reach.buffering:
        # The parent still holds these records and will flush them.
        del handler.buffer[:]
    for _, lock in reach.extra_locks:
        _compat.reinit_lock(lock)
    for q in reach.queues:
        _reinit_queue(q)
    for listener in reach.listeners:
        _child_listener(listener, reach.handlers, settings.child)
    if settings.child == "reset":
        _reset_configuration(settings)
    else:
        for handler in reach.sockets:
            _reconnect_later(handler)


def _reinit_queue(q: Any) -> None:
    if _reach.is_thread_queue(q):
        _compat.reinit_lock(q.mutex)
        # Condition._at_fork_reinit also forgets the waiters: the parent's
        # threads, which a notify() in the child would wake instead of ours.
        for condition in (q.not_empty, q.not_full, q.all_tasks_done):
            _compat.reinit_lock(condition)
    elif _reach.is_process_queue(q) and hasattr(q, "_reset"):
        _compat.reset_multiprocessing_queue(q)


def _drop_pending(q: Any) -> None:
    """Forget the copy of the parent's pending records: the parent handles them."""
    if _reach.is_thread_queue(q):
        q.queue.clear()
        q.unfinished_tasks = 0
    else:
        while True:
            try:
                q.get_nowait()
            except Exception:
                return


def _child_listener(
    listener: logging.handlers.QueueListener, handlers: List[logging.Handler], mode: str
) -> None:
    _compat.forget_listener_thread(listener)
    q = listener.queue
    if not _reach.is_in_process_queue(q):
        # A multiprocessing queue: the parent's listener still consumes it,
        # and records the child puts there reach it. Nothing to restart.
        return
    _drop_pending(q)
    if mode != "inherit":
        return
    feeders = [h for h in handlers if isinstance(h, logging.handlers.QueueHandler) and h.queue is q]
    if feeders:
        _RestartOnFirstUse(listener, feeders)


class _RestartOnFirstUse:
    """Restart an inherited listener when a record is first put on its queue.

    Starting its thread in the child hook would break gevent-patched programs
    and make every child multi-threaded whether it logs or not.
    """

    def __init__(
        self,
        listener: logging.handlers.QueueListener,
        feeders: List[logging.handlers.QueueHandler],
    ) -> None:
        self._listener = listener
        self._feeders = feeders
        self._inherited_thread = getattr(listener, "_thread", None)
        self._lock = threading.Lock()
        for handler in feeders:
            # An instance attribute shadows QueueHandler.enqueue until popped.
            handler.enqueue = functools.partial(self._enqueue, handler)  # type: ignore[method-assign]

    def _enqueue(self, handler: logging.handlers.QueueHandler, record: logging.LogRecord) -> None:
        with self._lock:
            for feeder in self._feeders:
                feeder.__dict__.pop("enqueue", None)
            listener = self._listener
            # If the child stopped or restarted the listener itself, respect that.
            if getattr(listener, "_thread", None) is self._inherited_thread:
                _compat.restart_queue_listener(listener)
                # Nobody in the child knows this thread exists: stop it (which
                # handles what is queued) when the child ends, whether by
                # interpreter exit or by multiprocessing's os._exit() (in a
                # child multiprocessing started, so it is imported).
                atexit.register(_stop_listener, listener)
                mp_util = sys.modules.get("multiprocessing.util")
                if mp_util is not None:
                    mp_util.Finalize(listener, _stop_listener, args=(listener,), exitpriority=100)
        handler.enqueue(record)


def _stop_listener(listener: logging.handlers.QueueListener) -> None:
    if getattr(listener, "_thread", None) is not None:
        with contextlib.suppress(Exception):
            listener.stop()


def _reconnect_later(handler: logging.Handler) -> None:
    """Stop a child from writing into the parent's stream socket."""
    if isinstance(handler, logging.handlers.SocketHandler):
        # emit() connects again when sock is None. The inherited socket is
        # not closed: that would only close the child's descriptor anyway.
        handler.sock = None
    else:
        try:
            _compat.drop_syslog_stream_socket(handler)
        except OSError as exc:
            _report("could not reconnect %r in the child: %s" % (handler, exc))


def _reset_configuration(settings: _settings.Settings) -> None:
    """Drop the inherited handlers (closing nothing) and apply the child's configuration."""
    for logger in _reach.loggers():
        del logger.handlers[:]
    config = settings.config
    if config is None:
        return
    try:
        if callable(config):
            config()
        else:
            # Imported by install(child="reset", config={...}): a lookup here.
            import logging.config

            logging.config.dictConfig(copy.deepcopy(dict(config)))
    except Exception as exc:
        _report("applying the child's logging configuration failed: %r" % (exc,))


def _report(message: str) -> None:
    """Tell the user without logging: logging is what is being repaired."""
    with contextlib.suppress(OSError):
        os.write(2, ("forksafe_logging: %s\n" % message).encode("utf-8", "replace"))
