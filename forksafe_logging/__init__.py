"""Make the standard ``logging`` module safe across processes.

One call, :func:`install`, and every process the program starts, by
``fork``, ``spawn`` or ``forkserver``, logs through the top process's
handlers: no lock copied held, no record lost, none written twice.
"""

from __future__ import annotations

from forksafe_logging._install import attach, install, is_installed, uninstall
from forksafe_logging.handlers import QueueHandler, QueueListener, flush

__all__ = [
    "QueueHandler",
    "QueueListener",
    "__version__",
    "attach",
    "flush",
    "install",
    "is_installed",
    "uninstall",
]

__version__ = "0.3.0"
