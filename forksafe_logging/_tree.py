"""Which tree this process belongs to, and how its descendants find the listener.

The top process publishes its listener's endpoint in the environment
(:data:`ENV_VAR`) for descendants started from then on; a forked child of the
top works it out from the listener object it inherited; a spawned child, or
one that calls ``attach()``, joins explicitly.
"""

from __future__ import annotations

import os

from forksafe_logging import _compat, _server
from forksafe_logging._state import state

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Optional, Tuple

    #: ``(top pid, key, socket path)``: how a process reaches a listener.
    Endpoint = Tuple[int, bytes, str]

#: Where descendants find the listener: ``"<top pid>:<key hex>:<socket path>"``.
#: Set by the top process; spawn and forkserver children and subprocesses
#: inherit it with the environment.
ENV_VAR = "FORKSAFE_LOGGING_LISTENER"


def tree() -> Optional[Endpoint]:
    """The listener of the tree this process belongs to, when it is not the top."""
    where = state.where
    if where is None:
        # A forked child of the top has the top's listener object, which is
        # never freed (see _server.Server): it is worked out here, on first
        # use, rather than in the fork hook, where each page written costs.
        server = state.server
        if server is not None and server.pid != os.getpid():
            where = state.where = server.endpoint
    return where


def endpoint() -> Optional[Endpoint]:
    """The listener this process sends to: its own if it is the top, else its tree's."""
    server = _server.current()
    if server is not None:
        return server.endpoint
    return tree()


def join(where: Endpoint) -> None:
    """Belong to the tree whose listener is at ``where`` from now on."""
    state.where = where


#: :data:`ENV_VAR` as this process found it when the package was imported,
#: before a listener of its own could overwrite it.
_inherited = os.environ.get(ENV_VAR)


def from_environment(inherited: bool = False) -> Optional[Endpoint]:
    """The endpoint an ancestor published in :data:`ENV_VAR`, if any.

    ``inherited=True`` reads the value the process started with.
    """
    value = _inherited if inherited else os.environ.get(ENV_VAR)
    if not value:
        return None
    try:
        pid, key, address = value.split(":", 2)
        if address.startswith("@"):  # an abstract address: see publish()
            address = "\0" + address[1:]
        return int(pid), bytes.fromhex(key), address
    except ValueError:
        return None


def publish(where: Endpoint) -> None:
    """Let descendants started from now on find ``where`` (see :func:`attach`)."""
    pid, key, address = where
    # An environment variable cannot hold the NUL byte that starts an
    # abstract address: "@" stands for it, as in ss(8) and /proc/net/unix.
    if address.startswith("\0"):
        address = "@" + address[1:]
    value = "%d:%s:%s" % (pid, key.hex(), address)
    if os.environ.get(ENV_VAR) != value:
        # Already there, it came with the environment this process was
        # given (a spawned child, a program that attach()es): not ours to
        # take out at uninstall().
        state.published = value
        os.environ[ENV_VAR] = value


def published() -> bool:
    """Whether :data:`ENV_VAR` holds what the library published."""
    return state.published is not None and os.environ.get(ENV_VAR) == state.published


def unpublish() -> None:
    state.published = None
    os.environ.pop(ENV_VAR, None)


def is_descendant() -> bool:
    """Whether this process belongs to a tree whose listener runs in an ancestor."""
    if _server.current() is not None:
        return False
    if tree() is None:
        where = from_environment()
        if (
            where is not None
            and where[0] != os.getpid()
            and (
                # A spawn or forkserver child importing its parent's main
                # module: the object that will attach it is not unpickled yet.
                _compat.being_spawned_by_multiprocessing()
                # A child multiprocessing started for the top, which has a
                # listener without install() (a QueueHandler of its dictConfig
                # started it): uvicorn's workers configure logging again
                # with the same dictConfig.
                or _compat.multiprocessing_parent_pid() == where[0]
            )
        ):
            join(where)
    return tree() is not None


def start_listener() -> _server.Server:
    """This process's listener, started if it is not running, and published."""
    if _server.current() is None and _compat.green_patched():
        raise RuntimeError(_compat.GREEN_TOP)  # rather than a listener that blocks for ever
    server = _server.ensure_started()
    publish(server.endpoint)
    for hook in _server.on_start:  # the fork hooks' registration (see there)
        hook()
    return server
