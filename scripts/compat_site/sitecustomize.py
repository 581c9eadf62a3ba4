"""Start-up hook of ``scripts/compat.py``: every interpreter of a compat run comes through here.

``compat.py`` puts this directory first on ``PYTHONPATH`` for both of its runs
of ``test.test_logging`` and sets ``FORKSAFE_COMPAT_MODE``:

- ``install``: import ``forksafe_logging`` and call ``install()`` (with
  ``child=$FORKSAFE_COMPAT_CHILD`` if that is set);
- ``plain``: do nothing to logging (not even import the package);
- ``logging``: only ``import logging``, to tell what importing it at start-up
  does apart from what ``install()`` does.

Either way each interpreter leaves a small JSON file in
``FORKSAFE_COMPAT_MARKERS`` saying who it was and whether ``install()`` is in
force, so ``compat.py`` can prove that the check tested something, in the
test runner *and* in every Python subprocess it started. A ``sitecustomize``
that this one shadows runs first, as it would have without us.

Without ``FORKSAFE_COMPAT_MODE`` the module does nothing but that chaining.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Dict, Optional

_HERE = os.path.dirname(os.path.abspath(__file__))


def _chain() -> Optional[str]:
    """Run the ``sitecustomize`` further down ``sys.path``, if any; return its file."""
    import importlib.machinery
    import importlib.util

    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return spec.origin or "?"


def _record(info: Dict[str, Any]) -> None:
    directory = os.environ.get("FORKSAFE_COMPAT_MARKERS")
    if not directory:
        return
    import json

    name = "%d-%d.json" % (os.getpid(), id(info))
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        json.dump(info, f)


def _main() -> None:
    info: Dict[str, Any] = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "argv": list(getattr(sys, "argv", [])),
        "executable": sys.executable,
        "mode": os.environ.get("FORKSAFE_COMPAT_MODE"),
        "installed": False,
        "module_file": None,
        "chained": None,
        "error": None,
    }
    try:
        info["chained"] = _chain()
    except Exception as exc:
        info["error"] = "the chained sitecustomize failed: %r" % (exc,)
    if info["mode"] == "logging":
        import logging  # noqa: F401
    elif info["mode"] == "install":
        try:
            import forksafe_logging

            child = os.environ.get("FORKSAFE_COMPAT_CHILD")
            if child:
                forksafe_logging.install(child=child)
            else:
                forksafe_logging.install()
            info["installed"] = forksafe_logging.is_installed()
            info["module_file"] = forksafe_logging.__file__
        except Exception as exc:
            info["error"] = "install() failed: %r" % (exc,)
    if info["mode"] is not None:
        with contextlib.suppress(OSError):  # compat.py notices the missing marker
            _record(info)


_main()
