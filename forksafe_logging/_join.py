"""How a process below the top joins the tree: :func:`join_tree`, and spawn children by themselves.

``install()`` puts an :class:`_Attach` into ``multiprocessing``'s per-process
config, which is pickled into every child it starts. Unpickling it in the
child, which happens after the child has imported the parent's main module
(and run any logging set-up at module level there), calls
:func:`attach_spawned`: the parent's logger levels of that moment, then
:func:`join_tree`.
"""

from __future__ import annotations

import multiprocessing.process
import os
import sys

from forksafe_logging import _atfork, _forward, _reach, _server, _settings, _tree
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Tuple

#: The key in ``multiprocessing.current_process()._config``.
CONFIG_KEY = "forksafe_logging"


def join_tree(where: Tuple[int, bytes, str]) -> None:
    """Forward this process's records to the listener at ``where`` from now on."""
    with state.install_lock:
        if _server.current() is not None:
            # install() ran at start-up (sitecustomize, say) before we knew that
            # this process has a tree above it; it has no children yet.
            _server.stop(0)
        _tree.join(where)
        _tree.publish(where)
        _atfork.register()
        become_descendant(_settings.Settings("forward", None, _settings.DEFAULT_FORK_TIMEOUT))


def become_descendant(settings: _settings.Settings) -> None:
    """Forward from now on, as a process below the top (its channel is open)."""
    # A forked child that has not used logging yet: finish what the fork began.
    _forward.rewire()
    if not state.undo:
        state.undo[:] = _forward.forward_tree()
    advertise()
    _forward.prepare_forwarder()
    state.settings = settings


class _Attach:
    """Pickled into spawn/forkserver children; unpickled, it attaches them."""

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
        # Runs in the parent as the child starts: the levels are those of now.
        found, disable = _reach.levels()
        return attach_spawned, (_tree.endpoint(), found, disable)


def attach_spawned(endpoint: Any, found: Dict[str, int], disable: int) -> _Attach:
    """In a spawned child: take the parent's levels and forward every record."""
    if endpoint is not None:
        _reach.apply_levels(found, disable)
        join_tree(tuple(endpoint))
    return _Attach()


def switch_subprocesses(on: bool) -> None:
    """Make every Python program started from here on join the tree as it starts, or not."""
    if on:
        os.environ[_settings.SUBPROCESSES_SWITCH] = "1"
        state.set_switch = True
    elif state.set_switch:
        os.environ.pop(_settings.SUBPROCESSES_SWITCH, None)
        state.set_switch = False


def _process_modules() -> List[Any]:
    """``multiprocessing.process``, and billiard's copy of it if it is imported.

    billiard (Celery's pool) keeps a process object of its own, whose config
    its spawn children unpickle the same way. It is not imported here: a
    program that imports it after ``install()`` attaches its billiard spawn
    workers with ``attach()``.
    """
    found: List[Any] = [multiprocessing.process]
    billiard = sys.modules.get("billiard.process")
    if billiard is not None:
        found.append(billiard)
    return found


def advertise() -> None:
    """Make children that ``multiprocessing`` starts from now on attach themselves."""
    for module in _process_modules():
        module.current_process()._config[CONFIG_KEY] = _Attach()


def advertised() -> bool:
    """Whether :func:`advertise` is in force (for ``uninstall()``)."""
    return any(CONFIG_KEY in module.current_process()._config for module in _process_modules())


def withdraw() -> None:
    for module in _process_modules():
        module.current_process()._config.pop(CONFIG_KEY, None)
