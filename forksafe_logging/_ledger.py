"""Every change the library makes outside its own objects that ``uninstall()`` undoes.

One list, :data:`PATCHES`, in the order ``uninstall()`` undoes them. Each
entry says what it changes and asks the module that made the change whether
something of ours is still in place in this process (:attr:`Patch.ours`),
and undoes only that: a value the program has replaced since is the
program's, and stays. The old values are kept where the change is made (the
first-use switch keeps the real lock and ``callHandlers``, ``_forward`` the
loggers' lists), not copied into entries here: a fork hook makes some of
these changes, and there every object it writes costs the child a page fault.

``docs/architecture.md`` ("What the library changes") has a row for each
entry, with why, and rows for what needs no undoing (the fork hooks, locks
re-initialized in a child's own copies); ``tests/test_ledger.py`` checks
both, and that after ``uninstall()`` no entry is ours, in a top and in a
forked child.
"""

from __future__ import annotations

import logging

from forksafe_logging import _fork_warning, _forward, _join, _order, _server, _settings, _tree
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Callable, List


class Patch:
    """One kind of change, and how to undo what is left of it."""

    __slots__ = ("_ours", "_undo", "needs_install", "what")

    def __init__(
        self,
        what: str,
        ours: Callable[[], bool],
        undo: Callable[[], None],
        needs_install: bool = False,
    ) -> None:
        #: As the first column of the docs' table names it.
        self.what = what
        self._ours = ours
        self._undo = undo
        #: Undone only by the uninstall() of an install() in force (in this
        #: process, or copied by fork): a listener that a QueueHandler
        #: started, and what goes with it, is the program's.
        self.needs_install = needs_install

    def ours(self) -> bool:
        """Whether something of ours is in place in this process."""
        return bool(self._ours())

    def undo(self) -> None:
        """Put back what was there before, where ours is still in place."""
        self._undo()

    def __repr__(self) -> str:
        return "<Patch %s>" % (self.what,)


def _forwarding() -> bool:
    return bool(state.undo)


def _stop_forwarding() -> None:
    _forward.restore(state.undo)
    del state.undo[:]


def _started_listener() -> bool:
    # The very one install() started: not one a QueueHandler started since.
    server = _server.current()
    return server is not None and server is state.started_listener


def _stop_listener() -> None:
    state.started_listener = None
    _server.stop()
    # What the listener handed to the handlers is on its way to their files.
    for ref in list(logging._handlerList):  # type: ignore[attr-defined]
        handler = ref()
        if handler is not None:
            try:
                handler.flush()
            except Exception:
                pass


def _published_here() -> bool:
    # Not while a listener of this process runs (one a QueueHandler started).
    return _tree.published() and _server.current() is None


def _order_patch_idle() -> bool:
    return _order.patched() and _server.current() is None


def _fork_filter_idle() -> bool:
    return _fork_warning.installed() and _server.current() is None


def _subprocesses_switched() -> bool:
    return state.set_switch


def _switch_off_subprocesses() -> None:
    _join.switch_subprocesses(False)


#: In the order ``uninstall()`` undoes them: the first-use switch goes before
#: the loggers' lists come back (so the inheritance is not rewired first), and
#: the listener stops after everything that forwards to it is undone.
PATCHES: List[Patch] = [
    Patch("`logging._lock` and `Logger.callHandlers`", lambda: _forward._switch.armed,
          _forward.disarm),
    Patch("Each logger's `handlers` and `filters` lists", _forwarding, _stop_forwarding),
    Patch("`logging._handlerList`, `logging.shutdown`'s default",
          lambda: _forward._switch.inherited_handlers is not None,
          _forward.give_back_handler_list),
    Patch("`multiprocessing.current_process()._config[\"forksafe_logging\"]` (and billiard's)",
          _join.advertised, _join.withdraw),
    Patch("`os.environ[\"%s\"]`" % _settings.SUBPROCESSES_SWITCH, _subprocesses_switched,
          _switch_off_subprocesses),
    Patch("The listener's thread", _started_listener, _stop_listener, needs_install=True),
    # Put there when a listener started; it would do nothing once the
    # listener has stopped, but the program's filters are its own again.
    Patch("`warnings.filters`: one filter in front", _fork_filter_idle, _fork_warning.forget),
    # Inherited by forked children (and put there by a process that joins a
    # tree): programs started after uninstall() do not join through it.
    Patch(
        "`os.environ[\"%s\"]`" % _tree.ENV_VAR, _published_here, _tree.unpublish, needs_install=True
    ),
    # The listener's stop takes it out in the top; a forked child inherits
    # it, passing through.
    Patch("`Logger.callHandlers` in the top", _order_patch_idle, _order.unpatch,
          needs_install=True),
]  # fmt: skip


def undo_all(installed: bool) -> None:
    """Undo every entry still ours; the caller holds ``state.install_lock``.

    ``installed``: whether an ``install()`` was in force (see
    :attr:`Patch.needs_install`). Each entry is asked after the ones before
    it are undone: the first-use switch, undone, puts back the order patch
    that a later entry then takes out.
    """
    for patch in PATCHES:
        if (installed or not patch.needs_install) and patch.ours():
            patch.undo()


def left() -> List[Patch]:
    """The entries that say something of ours is in place now, asked all at once (for the tests).

    Asked at once, an entry that an earlier one's undoing would uncover
    (the order patch behind an armed first-use switch) is not listed.
    """
    return [patch for patch in PATCHES if patch.ours()]
