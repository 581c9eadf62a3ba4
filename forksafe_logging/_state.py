"""Everything the package keeps about the process it runs in, in one object.

The modules own the meaning of their fields (the comments say which module
writes each); this object only gives them one home, so that a reader sees
all the package's process-wide state in one place, the fork hooks write to
one object (few pages to copy in a child), and tests can compare the whole
of it with a fresh one. Not in here, on purpose: objects the package keeps
alive for ever (``_streams``'s abandoned streams, ``_forward``'s kept
lists), caches (``_decode``'s file names), what the process was started
with (``_tree``'s inherited environment value), and ``_forward``'s switch
object, which is installed as ``logging._lock`` and whose fields belong
to it.

Imports nothing of the package: every layer may import it.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    import logging
    from typing import Any, Dict, List, Optional, Tuple

    from forksafe_logging._channel import Channel
    from forksafe_logging._server import Server
    from forksafe_logging._settings import Settings
    from forksafe_logging._turns import Turns

    Endpoint = Tuple[int, bytes, str]


class State:
    """The package's process-wide state (one instance: :data:`state`)."""

    __slots__ = (
        "channel",
        "child_closes",
        "exit_checked_pid",
        "fd_lock",
        "fd_lock_holder",
        "fork_filter",
        "forwarder",
        "hooks_registered",
        "install_lock",
        "order_hooked",
        "order_turns",
        "order_wrapped",
        "pinned",
        "plans",
        "proc_task",
        "published",
        "sentry_marked_pid",
        "server",
        "server_lock",
        "set_switch",
        "settings",
        "started_listener",
        "undo",
        "where",
    )

    def __init__(self) -> None:
        # -- install(), uninstall(), attach() (_install, _join, _ledger) --
        #: The settings in force, or None when not installed. The hooks read
        #: it once per fork; rebinding an attribute is atomic, so they never
        #: see half of it.
        self.settings: Optional[Settings] = None
        #: Serializes install()/uninstall(). Never taken by the fork hooks;
        #: re-initialized in a forked child, as are the other two locks.
        self.install_lock = threading.Lock()
        #: The listener install() started in this process (so uninstall()
        #: stops it, and no other listener started since), or None.
        self.started_listener: Optional[Server] = None
        #: Whether install(subprocesses=True) set the switch in this
        #: process's environment (so uninstall() clears it).
        self.set_switch = False
        #: What forwarding took from this process's loggers, for
        #: uninstall(): ``(logger, handlers, filters)``.
        self.undo: List[Tuple[Any, List[Any], List[Any]]] = []

        # -- the listener (_server) --
        #: The listener this process started, or (copied by fork) its
        #: parent's: never freed, see _server.Server.
        self.server: Optional[Server] = None
        #: Guards starting and stopping the listener, and the fork hooks'
        #: registration.
        self.server_lock = threading.Lock()

        # -- descriptors a forked child closes (_endpoint) --
        #: The listener's descriptors, which a forked child closes its
        #: copies of: a number is added once it is open and removed before
        #: it is closed, so whatever a child sees, it closes only ours.
        self.child_closes: List[int] = []
        #: Held from the moment such a descriptor is opened until its number
        #: is listed, and by the before-fork hook (see _endpoint).
        self.fd_lock = threading.RLock()

        # -- the tree (_tree) --
        #: The listener of the tree this process belongs to, when it is not
        #: the top. Set in a spawned child (from what its parent pickled), by
        #: ``attach()``, or by _tree.tree() in a forked child of the top.
        self.where: Optional[Endpoint] = None
        #: The value _tree.publish() put in the environment: what
        #: uninstall() may take out.
        self.published: Optional[str] = None

        # -- the sender's connection (_channel) --
        #: This process's channel (a forked child makes its own).
        self.channel: Optional[Channel] = None
        #: The process whose exit runs _channel.check_at_exit.
        self.exit_checked_pid = 0

        # -- forwarding (_forward) --
        #: The handler that sends this process's records to the top's
        #: logger tree, made on first use.
        self.forwarder: Optional[logging.Handler] = None
        #: Whether the lists forwarding children abandon are made unfreeable
        #: (_forward.prepare_forwarder).
        self.pinned = False

        # -- the order of records across processes (_order) --
        #: The listener's turns the top's records wait for, or None.
        self.order_turns: Optional[Turns] = None
        #: What ``Logger.callHandlers`` was when the patch went in. Kept
        #: after the patch comes out: a wrapper put over ours (sentry-sdk
        #: wraps it too) still calls ours, which then only passes the call on.
        self.order_wrapped: Any = None
        #: Whether the fork hook that forgets the listener in a child is in.
        self.order_hooked = False

        # -- the fork hooks (_atfork) --
        #: What the before hook took, by thread id: two threads may fork at
        #: once, and their hooks run concurrently (CPython takes the import
        #: lock only after the ``before`` hooks).
        self.plans: Dict[int, Any] = {}
        #: Whether the hooks are registered (they cannot be unregistered).
        self.hooks_registered = False
        #: The thread whose before hook holds ``fd_lock``, or 0.
        self.fd_lock_holder = 0

        # -- the 3.12+ fork warning (_fork_warning) --
        #: The filter a top keeps first in ``warnings.filters``
        #: (``_fork_warning.keep_first``), or None.
        self.fork_filter: Optional[Tuple[str, Any, type, None, int]] = None
        #: ``(pid, descriptor of /proc/self/task)`` for os_thread_count().
        self.proc_task = (0, -1)

        # -- other libraries (_peers) --
        #: The process that marked a record as reported by its Sentry: at its
        #: exit, that Sentry must send what it holds (_peers.flush_sentry).
        self.sentry_marked_pid = 0


#: The one instance. Modules read it as ``_state.state`` (never bind a field
#: to a name of their own: a fork hook may replace a lock).
state = State()


#: Fields kept for the life of the process, by design: registrations that
#: cannot be undone (fork hooks, atexit), objects never freed (the
#: forwarder, the wrapped ``callHandlers``), a sender's connection (kept so
#: that what it sent is confirmed), the tree a forked child belongs to,
#: and caches.
LIFELONG = frozenset(
    {
        "channel",
        "exit_checked_pid",
        "forwarder",
        "hooks_registered",
        "order_hooked",
        "order_wrapped",
        "pinned",
        "proc_task",
        "sentry_marked_pid",
        "where",
    }
)
_LOCKS = ("install_lock", "server_lock", "fd_lock")


def departures() -> Dict[str, Any]:
    """The fields of :data:`state` that are not as in a fresh :class:`State`, with their values.

    Lifelong fields (:data:`LIFELONG`) aside; a lock counts when it is held.
    """
    fresh = State()
    found: Dict[str, Any] = {}
    for name in State.__slots__:
        value = getattr(state, name)
        if name in LIFELONG:
            continue
        if name in _LOCKS:
            # An RLock is acquired again by the thread that holds it.
            owned = getattr(value, "_is_owned", None)
            if owned is not None and owned():
                found[name] = "held"
            elif value.acquire(False):
                value.release()
            else:
                found[name] = "held"
        elif value != getattr(fresh, name):
            found[name] = value
    return found
