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

from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any


def _call_handlers_in_turn(self: logging.Logger, record: logging.LogRecord) -> None:
    # No thread-local flag and no try/finally here: this runs for every
    # record of the top, and the check below is one attribute read and, with
    # children connected, one epoll_wait(0). What must not wait (a record
    # logged from inside a handler: _reach.inside_a_handler) is told apart only
    # when it would wait.
    turns = state.order_turns
    if turns is not None:
        turns.wait_turn()
    state.order_wrapped(self, record)  # type: ignore[misc]


def enable(turns: Any) -> None:
    """Make the top's records wait their turn (``turns``: a running listener's)."""
    if not state.order_hooked:
        # A forked child inherits this patch and the parent's listener,
        # which is not its own: it forgets the listener (one assignment, so
        # safe in a fork hook) and its records pass straight through.
        os.register_at_fork(after_in_child=_forget)
        state.order_hooked = True
    if vars(logging.Logger).get("callHandlers") is not _call_handlers_in_turn:
        state.order_wrapped = logging.Logger.callHandlers
        logging.Logger.callHandlers = _call_handlers_in_turn  # type: ignore[method-assign]
    state.order_turns = turns


def _forget() -> None:
    state.order_turns = None


def disable(turns: Any) -> None:
    """Undo :func:`enable` for ``turns``; a no-op if another listener took its place."""
    if state.order_turns is not turns:
        return
    state.order_turns = None
    if vars(logging.Logger).get("callHandlers") is _call_handlers_in_turn:
        logging.Logger.callHandlers = state.order_wrapped  # type: ignore[method-assign,assignment]


def active() -> bool:
    """Whether the patch is in force (for the tests and ``diagnose()``)."""
    patched = vars(logging.Logger).get("callHandlers") is _call_handlers_in_turn
    return state.order_turns is not None and patched


def patched() -> bool:
    """Whether ``Logger.callHandlers`` is still ours, waiting or passing through."""
    return vars(logging.Logger).get("callHandlers") is _call_handlers_in_turn


def unpatch() -> None:
    """Give ``Logger.callHandlers`` back, unless a listener of this process needs it.

    For ``uninstall()`` in a forked child, which inherits the patch (passing
    through: :func:`_forget`); in the top the listener's stop takes it out.
    """
    if state.order_turns is None and patched():
        logging.Logger.callHandlers = state.order_wrapped  # type: ignore[method-assign,assignment]
