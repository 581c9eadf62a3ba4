"""What ``install()`` was asked for (what it keeps between calls is in ``_state``)."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Optional, Union

    #: A configuration for a child in ``"reset"`` mode: a ``dictConfig`` dict, or
    #: a callable that configures logging itself.
    ChildConfig = Union[Mapping[str, Any], Callable[[], object]]


CHILD_MODES = ("forward", "inherit", "reset")

#: How long, at most, one fork waits in total for the locks logging holds.
DEFAULT_FORK_TIMEOUT = 0.1

#: ``"1"``: an interpreter that starts with the package installed joins the
#: tree whose listener :data:`forksafe_logging._tree.ENV_VAR` names, or,
#: if none does, installs itself as a top (see :mod:`forksafe_logging._startup`;
#: ``forksafe_logging.pth`` spells the name out).
SUBPROCESSES_SWITCH = "FORKSAFE_LOGGING_SUBPROCESSES"


def check_child(child: object) -> None:
    """Raise ``ValueError`` unless ``child`` is one of :data:`CHILD_MODES`."""
    if not isinstance(child, str) or child not in CHILD_MODES:
        raise ValueError(
            "child must be one of %s; got %r" % (", ".join(repr(m) for m in CHILD_MODES), child)
        )


class Settings:
    """The options of one ``install()`` call."""

    __slots__ = ("child", "config", "fork_timeout", "warn_held_locks")

    def __init__(
        self,
        child: str,
        config: Optional[ChildConfig],
        fork_timeout: float,
        warn_held_locks: bool = False,
    ) -> None:
        self.child = child
        self.config = config
        self.fork_timeout = fork_timeout
        self.warn_held_locks = warn_held_locks


#: ``"0"`` in the top process's environment: no record takes the fast path
#: (:mod:`forksafe_logging._plans`); for comparisons and as a way out.
FAST_PATH_SWITCH = "FORKSAFE_LOGGING_FAST_PATH"


def fast_path() -> bool:
    """Whether the listener offers plans (see :data:`FAST_PATH_SWITCH`)."""
    return os.environ.get(FAST_PATH_SWITCH, "1") != "0"
