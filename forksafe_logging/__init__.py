"""Make the standard ``logging`` module safe across processes.

One call, :func:`install`, and every forked child can log: no lock copied
held, no listener thread missing, no line written twice.
"""

from __future__ import annotations

from forksafe_logging._install import install, is_installed, uninstall

__all__ = ["__version__", "install", "is_installed", "uninstall"]

__version__ = "0.1.0"
