"""What one look at a process found: :class:`Diagnosis`.

:mod:`forksafe_logging._detect` finds the :class:`~forksafe_logging.Hazard`
objects, :mod:`forksafe_logging._doctor` puts them together, and
:mod:`forksafe_logging._prose` words the report.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from forksafe_logging import _prose
from forksafe_logging._hazard import THREAD_KINDS, Hazard


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` found in one process, at one moment.

    ``str()`` of it is the report that ``python -m forksafe_logging doctor``
    prints.

    Attributes:
        hazards: Everything found, sorted by kind (in the order of
            :attr:`Hazard.kind`'s list).
        installed: Whether :func:`~forksafe_logging.install` is in force now.
        mode: The ``child=`` mode whose remedies :attr:`Hazard.remedy`
            describes: the one in force, or the one asked for.
        fork_timeout: The ``fork_timeout`` of that ``install()``.
        pid: The process examined.
        python: Its Python version.
        start_method: The start method ``multiprocessing`` (and
            ``concurrent.futures``) uses for its children in this process:
            set by the program, or this Python's default (``forkserver`` on
            Linux from 3.14, ``fork`` before). ``spawn`` children get
            nothing from ``"inherit"`` or ``"reset"``; ``forkserver``
            children get them from 3.14 if the main module calls
            ``install()`` when imported.
        start_method_is_default: Whether :attr:`start_method` is the
            default, the program having chosen none yet.

    .. versionchanged:: 0.4.0
       ``start_method`` and ``start_method_is_default`` are new.
    """

    hazards: Tuple[Hazard, ...]
    installed: bool
    mode: str
    fork_timeout: float
    pid: int
    python: str
    start_method: str = "fork"
    start_method_is_default: bool = True

    @property
    def uncovered(self) -> Tuple[Hazard, ...]:
        """The hazards that ``install()``, in :attr:`mode`, leaves as they are."""
        return tuple(h for h in self.hazards if not h.covered)

    @property
    def latent(self) -> Tuple[Hazard, ...]:
        """The hazards that cannot strike at this moment: no other thread runs.

        Each needs another thread inside the object at the fork
        (:attr:`Hazard.needs_thread`); with only the thread that would fork
        running, a fork now copies them safely. They become hazards as soon as
        the program forks while another thread logs.

        .. versionadded:: 0.4.0
        """
        if any(h.kind in THREAD_KINDS for h in self.hazards):
            return ()
        return tuple(h for h in self.hazards if h.needs_thread)

    @property
    def summary(self) -> str:
        """One line: how many hazards, how many ``install()`` covers, which it does not."""
        return _prose.summary(self)

    def advice(self, fork_at: Optional[str] = None) -> str:
        """What to do, in a few lines: the lines to add, and where.

        ``fork_at`` names the program's first fork (``"app.py, line 12"``),
        if known: ``install()`` goes before it.

        .. versionadded:: 0.4.0
        """
        return _prose.advice(self, fork_at)

    def to_dict(self) -> Dict[str, Any]:
        """Everything, as a dictionary ready for :func:`json.dumps`."""
        found = dataclasses.asdict(self)
        found["summary"] = self.summary
        return found

    def __str__(self) -> str:
        return self.report()

    def report(self, fork_at: Optional[str] = None) -> str:
        """The report, ending with :meth:`advice` (given ``fork_at``)."""
        return _prose.report(self, fork_at)
