"""One thing a fork would copy unsafely: :class:`Hazard`, its kinds, and how reports wrap text.

Plain data; :mod:`forksafe_logging._detect` finds the hazards,
:mod:`forksafe_logging._diagnosis` holds what one look found, and
:mod:`forksafe_logging._prose` says it.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any, Dict

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
THREAD_KINDS = ("listener-thread", "thread")


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
            mode the report describes (:attr:`~forksafe_logging.Diagnosis.mode`), or what to do
            when it does nothing.
        covered: Whether ``install()``, in that mode, makes a forked child
            safe from it.
        needs_thread: Whether it strikes only if another thread is using
            the object at the fork (a lock held, a write blocked). With no
            other thread running when looked at, it is
            :attr:`~forksafe_logging.Diagnosis.latent`.

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
