"""Causal order: the top's own records take their turn behind what children have sent.

A child's logging call returns once its record is in the kernel, on the
child's connection; the listener thread handles it a moment later. A top
process that learns of the child's progress in between (a pool's result, a
pipe, ``waitpid``) and logs would reach its handlers first, and the file
would tell the story backwards. So while a listener runs, the top's
``Logger.callHandlers``, which every record of a stock ``Logger`` reaches
before any handler, first lets the listener handle what has already arrived
(:meth:`forksafe_logging._turns.Turns.wait_turn`).

This module holds the switch and nothing else, below ``_turns`` (whose
object it calls) and ``_server`` (which turns it on and off), so that the
patch is in one place.
"""

from __future__ import annotations

import logging
import os

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

#: The listener's :class:`~forksafe_logging._turns.Turns`, whose records go
#: first; None: the patch passes through.
_active: Optional[Any] = None
#: What ``Logger.callHandlers`` was when the patch went in. Kept after the
#: patch comes out: a wrapper put over ours (sentry-sdk wraps it too) still
#: calls ours, which then only passes the call on.
_wrapped: Optional[Callable[[logging.Logger, logging.LogRecord], None]] = None
#: Whether the at-fork hook that forgets the listener in a child is in.
_hooked = False


def _call_handlers_in_turn(self: logging.Logger, record: logging.LogRecord) -> None:
    # No thread-local flag and no try/finally here: this runs for every
    # record of the top, and the check below is one attribute read and, with
    # children connected, one epoll_wait(0). What must not wait (a record
    # logged from inside a handler: _reach.inside_a_handler) is told apart only
    # when it would wait.
    turns = _active
    if turns is not None:
        turns.wait_turn()
    _wrapped(self, record)  # type: ignore[misc]


def enable(turns: Any) -> None:
    """Make the top's records wait their turn (``turns``: a running listener's)."""
    global _active, _wrapped, _hooked
    if not _hooked:
        # A forked child inherits this patch and the parent's listener,
        # which is not its own: it forgets the listener (one assignment, so
        # safe in a fork hook) and its records pass straight through.
        os.register_at_fork(after_in_child=_forget)
        _hooked = True
    if vars(logging.Logger).get("callHandlers") is not _call_handlers_in_turn:
        _wrapped = logging.Logger.callHandlers
        logging.Logger.callHandlers = _call_handlers_in_turn  # type: ignore[method-assign]
    _active = turns


def _forget() -> None:
    global _active
    _active = None


def disable(turns: Any) -> None:
    """Undo :func:`enable` for ``turns``; a no-op if another listener took its place."""
    global _active
    if _active is not turns:
        return
    _active = None
    if vars(logging.Logger).get("callHandlers") is _call_handlers_in_turn:
        logging.Logger.callHandlers = _wrapped  # type: ignore[method-assign,assignment]


def active() -> bool:
    """Whether the patch is in force (for the tests and ``diagnose()``)."""
    patched = vars(logging.Logger).get("callHandlers") is _call_handlers_in_turn
    return _active is not None and patched


def patched() -> bool:
    """Whether ``Logger.callHandlers`` is still ours, waiting or passing through."""
    return vars(logging.Logger).get("callHandlers") is _call_handlers_in_turn


def unpatch() -> None:
    """Give ``Logger.callHandlers`` back, unless a listener of this process needs it.

    For ``uninstall()`` in a forked child, which inherits the patch (passing
    through: :func:`_forget`); in the top the listener's stop takes it out.
    """
    if _active is None and patched():
        logging.Logger.callHandlers = _wrapped  # type: ignore[method-assign,assignment]
