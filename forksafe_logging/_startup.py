"""Joining at start-up: a Python program started below the top joins its tree by itself.

``forksafe_logging.pth``, which the package installs into ``site-packages``,
runs one line in every interpreter that starts there: it looks for
:data:`SWITCH` in the environment and, only if it is ``"1"``, imports this
module and calls :func:`start` — before the program's own code runs, so
before it logs. ``install(subprocesses=True)`` sets the switch for every
descendant; a user sets it for a program whose code cannot change, which
then installs itself as the top of its tree.

The ``.pth`` line imports this module only when the switch is on (which
imports the package's ``__init__``, and with it most of the package).
"""

from __future__ import annotations

import os
import sys

from forksafe_logging._settings import SUBPROCESSES_SWITCH as SWITCH

#: How long a joining program waits at most, as it starts, for the top's
#: logger levels.
LEVELS_TIMEOUT = 5.0


def start() -> None:
    """Join the tree named in the environment, or become its top (run by the ``.pth`` file)."""
    try:
        # The rest of the package only now, and only here: the switch is on.
        from forksafe_logging import _channel, _install, _reach, _tree

        if _tree.from_environment(inherited=True) is None:
            # Nobody above: this program is the top.
            _install.install(subprocesses=True)
            return
        _install.attach()
        # The levels of the top as this program starts (not as they were
        # when the switch was set: the top may have configured logging since).
        levels = _channel.ask_levels(LEVELS_TIMEOUT)
        if levels is not None:
            _reach.apply_levels(*levels)
    except Exception as exc:
        # Never into the program's start: it runs, logging on its own.
        try:
            sys.stderr.write(
                "forksafe_logging: %s=1, but this process (pid %d) could not join its "
                "tree's listener: %r; it logs on its own\n" % (SWITCH, os.getpid(), exc)
            )
        except Exception:
            pass
