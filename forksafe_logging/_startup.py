"""Joining at start-up: a Python program started below the top joins its tree by itself.

``forksafe_logging.pth``, which the package installs into ``site-packages``,
runs one line in every interpreter that starts there: it looks for
:data:`SWITCH` in the environment and, only if it is ``"1"``, imports this
module and calls :func:`start` — before the program's own code runs, so
before it logs. ``install(subprocesses=True)`` sets the switch for every
descendant; a user sets it for a program whose code cannot change, which
then installs itself as the top of its tree.

This module imports nothing of the package until :func:`start` runs: the
switch is off in almost every interpreter that reads the ``.pth`` file.
"""

from __future__ import annotations

import os
import sys

#: ``"1"``: an interpreter that starts with the package installed joins the
#: tree whose listener :data:`forksafe_logging._channel.ENV_VAR` names, or,
#: if none does, installs itself as a top.
SWITCH = "FORKSAFE_LOGGING_SUBPROCESSES"
#: How long a joining program waits at most, as it starts, for the top's
#: logger levels.
LEVELS_TIMEOUT = 5.0


def enable() -> None:
    """Set the switch for every program started from here on."""
    os.environ[SWITCH] = "1"


def disable() -> None:
    """Programs started from here on do not join by themselves."""
    os.environ.pop(SWITCH, None)


def start() -> None:
    """Join the tree named in the environment, or become its top (run by the ``.pth`` file)."""
    try:
        from forksafe_logging import _channel, _forward, _install

        if _channel.from_environment(inherited=True) is None:
            # Nobody above: this program is the top.
            _install.install(subprocesses=True)
            return
        _install.attach()
        # The levels of the top as this program starts (not as they were
        # when the switch was set: the top may have configured logging since).
        levels = _channel.channel().ask_levels(LEVELS_TIMEOUT)
        if levels is not None:
            _forward.apply_levels(*levels)
    except Exception as exc:
        # Never into the program's start: it runs, logging on its own.
        try:
            sys.stderr.write(
                "forksafe_logging: %s=1, but this process (pid %d) could not join its "
                "tree's listener: %r; it logs on its own\n" % (SWITCH, os.getpid(), exc)
            )
        except Exception:
            pass
