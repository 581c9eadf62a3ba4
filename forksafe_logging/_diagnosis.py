"""What the fork-hazard report is made of: :class:`Hazard`, :class:`Diagnosis` and its prose.

Plain data and the words around it; :mod:`forksafe_logging._detect` finds the
hazards, :mod:`forksafe_logging._doctor` puts them together.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any, Dict, Optional, Tuple

#: Every kind of :class:`Hazard`, in the order a report lists them.
KINDS = (
    "queue",
    "listener-thread",
    "handler-lock",
    "stream",
    "buffer",
    "socket",
    "structlog-lock",
    "thread",
)

#: The kinds that are threads: with one of them, no hazard is latent.
_THREAD_KINDS = ("listener-thread", "thread")


@dataclasses.dataclass(frozen=True)
class Hazard:
    """One thing that a fork would copy unsafely without the library.

    Attributes:
        kind: What it is, one of ``"queue"`` (the queue behind a
            ``QueueHandler``), ``"listener-thread"`` (a running stdlib
            ``QueueListener``), ``"handler-lock"`` (a lock of a handler that
            ``logging`` does not re-initialize in a child), ``"stream"`` (a
            handler writing to a buffered file object), ``"buffer"`` (records
            held by a ``MemoryHandler`` or another ``BufferingHandler``),
            ``"socket"`` (a connection a ``SocketHandler`` or TCP
            ``SysLogHandler`` keeps open), ``"structlog-lock"`` (a write lock
            of structlog's own loggers) or ``"thread"`` (another thread).
        where: The object, and where the logging configuration refers to it.
        detail: What goes wrong in a forked child because of it.
        remedy: What :func:`~forksafe_logging.install` does about it, in the
            mode the report describes (:attr:`Diagnosis.mode`), or what to do
            when it does nothing.
        covered: Whether ``install()``, in that mode, makes a forked child
            safe from it.
        needs_thread: Whether it strikes only if another thread is using
            the object at the fork (a lock held, a write blocked). With no
            other thread running when looked at, it is
            :attr:`~Diagnosis.latent`.

    .. versionchanged:: 0.4.0
       ``needs_thread`` is new.
    """

    kind: str
    where: str
    detail: str
    remedy: str
    covered: bool
    needs_thread: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """The fields, as a dictionary ready for :func:`json.dumps`."""
        return dataclasses.asdict(self)


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
        if any(h.kind in _THREAD_KINDS for h in self.hazards):
            return ()
        return tuple(h for h in self.hazards if h.needs_thread)

    @property
    def summary(self) -> str:
        """One line: how many hazards, how many ``install()`` covers, which it does not."""
        if not self.hazards:
            return "No fork hazards found."
        latent = self.latent
        present = tuple(h for h in self.hazards if not h.needs_thread or not latent)
        if not present:
            count = len(latent)
            return (
                "No fork hazard at this moment: no other thread runs. %s listed would be "
                "one%s if another thread used logging during a fork (%s)."
                % (
                    "The one" if count == 1 else "The %d" % count,
                    "" if count == 1 else " each",
                    self._count(latent).split("; ", 1)[1],
                )
            )
        text = self._count(present)
        if latent:
            text += "; %d more only if another thread used logging during a fork" % len(latent)
        return text + "."

    def _count(self, hazards: Tuple[Hazard, ...]) -> str:
        count = len(hazards)
        found = "%d fork hazard%s" % (count, "" if count == 1 else "s")
        mode = 'install(child="%s")' % self.mode
        uncovered = [h for h in hazards if not h.covered]
        if not uncovered:
            return "%s; %s covers %s" % (found, mode, "it" if count == 1 else "all of them")
        return "%s; %s covers %d, not: %s" % (
            found,
            mode,
            count - len(uncovered),
            ", ".join(sorted({h.kind for h in uncovered}, key=KINDS.index)),
        )

    def advice(self, fork_at: Optional[str] = None) -> str:
        """What to do, in a few lines: the lines to add, and where.

        ``fork_at`` names the program's first fork (``"app.py, line 12"``),
        if known: ``install()`` goes before it.

        .. versionadded:: 0.4.0
        """
        uncovered = self.uncovered
        # Children that are not forked from here get this process's handlers
        # in "forward" mode only, and only once install() is active.
        lost = self.start_method != "fork" and (self.mode != "forward" or not self.installed)
        if self.installed:
            return self._advice_installed(lost)
        if not self.hazards and not lost:
            return "What to do: nothing for now; no fork would copy anything unsafely."
        latent_ids = {id(h) for h in self.latent}
        covered = [h for h in self.hazards if h.covered]
        why = []
        if any(id(h) not in latent_ids for h in covered):
            why.append("to cover the hazards above")
        elif covered:
            why.append("so that a fork stays safe once other threads log")
        call = "forksafe_logging.install()"
        if lost:
            why.append(
                "so that what children started with %s log reaches these handlers"
                % self.start_method
            )
        elif self.mode != "forward":
            call = 'forksafe_logging.install(child="%s")' % self.mode
        if not why:
            return fill(
                "What to do: install() does not cover what is listed; see the entries "
                'marked "Not covered by install()" above.'
            )
        where = (
            "before %s (the first fork)" % fork_at if fork_at else "before the program's first fork"
        )
        text = fill("What to do: add these two lines %s, %s:" % (where, " and ".join(why)))
        text += "\n\n    import forksafe_logging\n    %s" % call
        if uncovered:
            text += '\n\nThen see the entries marked "Not covered by install()" above.'
        return text

    def _advice_installed(self, lost: bool) -> str:
        if lost:
            return fill(
                'What to do: children started with %s get nothing from install(child="%s"); '
                'install(child="forward") sends what they log to these handlers.'
                % (self.start_method, self.mode)
            )
        if self.uncovered:
            return fill(
                "What to do: install() is active; see the entries marked "
                '"Not covered by install()" above.'
            )
        if not self.hazards:
            return "What to do: nothing; install() is active."
        return "What to do: nothing; install() is active and covers what is listed."

    def to_dict(self) -> Dict[str, Any]:
        """Everything, as a dictionary ready for :func:`json.dumps`."""
        found = dataclasses.asdict(self)
        found["summary"] = self.summary
        return found

    def __str__(self) -> str:
        return self.report()

    def report(self, fork_at: Optional[str] = None) -> str:
        """The report, ending with :meth:`advice` (given ``fork_at``)."""
        lines = ["Fork hazards in process %d (Python %s)" % (self.pid, self.python)]
        options = 'child="%s", fork_timeout=%s' % (self.mode, self.fork_timeout)
        if self.installed:
            lines.append("install() is active (%s)." % options)
        else:
            lines.append(
                fill(
                    "install() is not active; the remedies are what install(%s) would do." % options
                )
            )
        if self.start_method != "fork" and self.mode != "forward":
            lines.append(
                fill(
                    'multiprocessing starts its children with "%s" here%s: they are not '
                    'forked from this process, so install(child="%s") does nothing for them, '
                    "and what they log is lost unless they configure logging themselves "
                    "(from Python 3.14, a forkserver child has what the main module sets up "
                    "when imported, install() included). "
                    'child="forward" covers every start method.'
                    % (
                        self.start_method,
                        " (this Python's default)" if self.start_method_is_default else "",
                        self.mode,
                    )
                )
            )
        elif self.start_method != "fork" and not self.installed:
            lines.append(
                fill(
                    'multiprocessing starts its children with "%s" here%s: they are not '
                    "forked from this process, and what they log does not reach its handlers "
                    "unless they configure logging themselves; install() sends it there."
                    % (
                        self.start_method,
                        " (this Python's default)" if self.start_method_is_default else "",
                    )
                )
            )
        latent = self.latent
        latent_ids = {id(h) for h in latent}
        ordered = [h for h in self.hazards if id(h) not in latent_ids] + list(latent)
        for number, hazard in enumerate(ordered, 1):
            lines.append("")
            if latent and hazard is latent[0]:
                lines.append(
                    fill(
                        "Only if another thread used logging during a fork (none runs "
                        "now, so a fork at this moment copies these safely):"
                    )
                )
                lines.append("")
            lines.append(fill("%d. [%s] %s" % (number, hazard.kind, hazard.where), "   "))
            lines.append(fill("At a fork: " + hazard.detail, "   ", "   "))
            label = "install()" if hazard.covered else "Not covered by install()"
            lines.append(fill("%s: %s" % (label, hazard.remedy), "   ", "   "))
        lines.append("")
        lines.append(fill(self.summary))
        lines.append("")
        lines.append(self.advice(fork_at))
        return "\n".join(lines)


def fill(text: str, indent: str = "", first: str = "") -> str:
    """``text`` wrapped for a terminal, every line but the first indented by ``indent``."""
    return textwrap.fill(
        text,
        width=79,
        initial_indent=first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
