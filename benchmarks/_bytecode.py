"""Make sure the package under test runs from compiled bytecode, as an installed one does.

pip compiles a package's modules when it installs it. A source tree has no
``__pycache__`` until a module is first imported, and none at all when
``PYTHONDONTWRITEBYTECODE`` is set (it is on some machines, this project's
CI runners included): every process that imports the package then compiles
it from source. That costs time at start-up (a spawned worker's) and leaves
the compiler's garbage in the process's memory, which makes each of its
forks slower: measured here, it was most of what importing the package
seemed to add to a fork. The benchmarks compile the package once, first,
and say so.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def compile_package(name: str = "forksafe_logging") -> str:
    """Compile ``name``'s modules where they are found; return a line for the report."""
    spec = importlib.util.find_spec(name)
    # Not found: run from a checkout without installing it.
    where = Path(spec.origin).parent if spec is not None and spec.origin else REPO_ROOT / name
    return compile_dir(where)


def compile_dir(where: Path) -> str:
    """Compile the package in ``where``; return a line for the report."""
    if not os.access(where, os.W_OK):
        return "bytecode: %s is not writable; its installer compiled it, or not" % where
    ok = compileall.compile_dir(str(where), quiet=1)
    return "bytecode: %s compiled%s (as pip does at install)" % (
        where,
        "" if ok else " with errors",
    )
