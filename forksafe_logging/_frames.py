"""How the fork-hazard report names a place in the code: a frame, in the stdlib or not.

Loaded only by the doctor (``sysconfig`` is not imported otherwise).
"""

from __future__ import annotations

import os
import sysconfig

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Tuple

#: Read once, when the doctor imports this module: the first get_paths() of a
#: process imports the build's configuration module, and diagnose() imports
#: nothing.
_PATHS = sysconfig.get_paths()


def in_stdlib(path: str) -> bool:
    """Whether ``path`` (a code object's file) is the standard library's."""
    paths = _PATHS
    if path.startswith((paths["purelib"], paths["platlib"])):
        return False  # site-packages may lie inside the stdlib's directory
    return path.startswith((paths["stdlib"], "<frozen "))


def outside_stdlib(frame: Any, also: Tuple[str, ...] = ()) -> Any:
    """The innermost of ``frame`` and its callers in code neither of the stdlib nor in ``also``."""
    while frame is not None:
        path = frame.f_code.co_filename
        if path not in also and not in_stdlib(path):
            return frame
        frame = frame.f_back
    return None


def position(frame: Any) -> str:
    """``name() in file.py, line N``; the path inside the stdlib for its files."""
    path = frame.f_code.co_filename
    if in_stdlib(path) and not path.startswith("<"):
        path = os.path.relpath(path, _PATHS["stdlib"])
    else:
        path = os.path.basename(path)
    line = frame.f_lineno
    if line is None:
        # Another thread's frame, looked at between two of its instructions
        # where it has no line (seen on 3.11): the function and file only.
        return "%s() in %s" % (frame.f_code.co_name, path)
    return "%s() in %s, line %d" % (frame.f_code.co_name, path, line)


def doing(frame: Any) -> str:
    """Where a thread is: its innermost frame, and the innermost outside the stdlib."""
    if frame is None:
        return ""
    text = " When looked at, it was in %s" % position(frame)
    caller = outside_stdlib(frame)
    if caller is not None and caller is not frame:
        text += ", called from %s" % position(caller)
    return text + "."
