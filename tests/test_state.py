"""The package's process-wide state: one object, as fresh after uninstall() as before install()."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
from scenario_lib import forked

import forksafe_logging
from forksafe_logging import _install, _state
from forksafe_logging._state import State, state

pytestmark = pytest.mark.timeout(60)


def test_every_field_is_declared_and_set() -> None:
    """A field added to the object is given a value by __init__ (slots have no default)."""
    fresh = State()
    assert sorted(name for name in State.__slots__ if not hasattr(fresh, name)) == []
    assert set(State.__slots__) >= _state.LIFELONG


def test_departures_finds_a_changed_field_and_a_held_lock() -> None:
    saved = state.child_closes
    state.child_closes = [3]
    try:
        with state.install_lock:
            assert _state.departures() == {"child_closes": [3], "install_lock": "held"}
    finally:
        state.child_closes = saved
    assert _state.departures() == {}


def test_uninstall_leaves_the_state_fresh(tmp_path: Path) -> None:
    """install(), a forked child that logs, records of the top; uninstall(): nothing left."""
    logging.basicConfig(filename=str(tmp_path / "app.log"), force=True)
    logging.getLogger().setLevel(logging.INFO)
    assert _state.departures() == {}
    forksafe_logging.install(subprocesses=True)
    assert set(_state.departures()) >= {"settings", "started_listener", "server", "published"}

    def child() -> object:
        logging.getLogger("child").info("from %d", os.getpid())
        return "logged"

    assert forked(child) == "logged"
    logging.getLogger("top").info("from the top")
    forksafe_logging.uninstall()
    assert _state.departures() == {}
    lines = (tmp_path / "app.log").read_text().splitlines()
    assert len(lines) == 2


def test_reset_stops_a_listener_a_queue_handler_started(tmp_path: Path) -> None:
    """A QueueHandler starts the listener without install(); reset() stops it too."""
    target = logging.FileHandler(str(tmp_path / "q.log"))
    handler = forksafe_logging.QueueHandler([target])
    try:
        assert "server" in _state.departures()
        forksafe_logging.uninstall()  # not installed: the handler's listener stays
        assert "server" in _state.departures()
        _install.reset()
        assert _state.departures() == {}
    finally:
        handler.close()
        target.close()


def test_a_fork_hook_resets_the_locks_in_the_child() -> None:
    """The three locks, held by another thread at the fork, are free in a forked child."""
    forksafe_logging.install(child="inherit", fork_timeout=0.05)
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with state.install_lock, state.server_lock, state.fd_lock:
            entered.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(10)
        assert set(_state.departures()) >= {"install_lock", "server_lock", "fd_lock"}
        # The before hook waits for fd_lock a bounded time, then goes ahead.
        left = forked(lambda: sorted(set(_state.departures()) & set(_state._LOCKS)))
        assert left == []
    finally:
        leave.set()
        holder.join(10)


def test_a_forked_child_holds_nothing_its_parent_hook_took() -> None:
    """The before hook takes fd_lock for the forking thread; in the child no thread holds it."""
    forksafe_logging.install()
    assert forked(lambda: (state.fd_lock_holder, state.fd_lock._is_owned())) == [0, False]


def test_departures_sees_a_lock_held_by_the_calling_thread() -> None:
    """An RLock taken again by its owner would look free: it counts as held."""
    with state.fd_lock:
        assert _state.departures() == {"fd_lock": "held"}
