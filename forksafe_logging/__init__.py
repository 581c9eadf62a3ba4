"""Make the standard ``logging`` module safe across processes.

One call, :func:`install`, and every process the program starts, by
``fork``, ``spawn`` or ``forkserver``, logs through the top process's
handlers: no lock copied held, no record lost, none written twice.
"""

from __future__ import annotations

from forksafe_logging._install import attach, install, is_installed, uninstall
from forksafe_logging.handlers import QueueHandler, QueueListener, flush

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any

    from forksafe_logging._doctor import Diagnosis, Hazard, diagnose
    from forksafe_logging._held import HeldLockWarning

__all__ = [
    "Diagnosis",
    "Hazard",
    "HeldLockWarning",
    "QueueHandler",
    "QueueListener",
    "__version__",
    "attach",
    "diagnose",
    "flush",
    "install",
    "is_installed",
    "uninstall",
]

__version__ = "0.4.0.dev0"


def __getattr__(name: str) -> Any:
    # The doctor is imported when first used: what it needs (dataclasses
    # imports inspect) is not worth a cost at every program's start-up. Nor
    # is the held-lock warning's module: every module a process imports
    # makes each of its forks a little slower.
    if name in ("Diagnosis", "Hazard", "diagnose"):
        from forksafe_logging import _doctor  # on first use: see above

        return getattr(_doctor, name)
    if name == "HeldLockWarning":
        from forksafe_logging import _held  # on first use: see above

        return _held.HeldLockWarning
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
