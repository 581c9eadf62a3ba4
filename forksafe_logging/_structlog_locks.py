"""structlog's write locks, as the at-fork hooks see them, without importing structlog.

structlog's own loggers (``PrintLogger``, ``WriteLogger``, ``BytesLogger``)
hold a ``threading.Lock`` per file while they write a line, kept in a
module-level ``WRITE_LOCKS`` mapping from file to lock (``structlog._output``
since 22.1, ``structlog._loggers`` before; a ``WeakKeyDictionary`` since 23.3,
a plain dict before). Nothing in structlog re-initializes them after a fork.
Every logger of one file shares that file's lock object, so re-initializing
the objects in place repairs every logger, wherever it is referenced.

The hooks look the module up in ``sys.modules`` at each fork: structlog may be
imported after ``install()``, and a program that never imports it pays one
dict lookup.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, List, Tuple

_MODULES = ("structlog._output", "structlog._loggers")


def write_locks() -> List[Tuple[Any, Any]]:
    """``(file, lock)`` for each file structlog has written to, or ``[]``.

    Safe inside an at-fork hook: no import, no lock, no Python-level iteration
    that another thread could interleave with (``list(dict.items())`` is one
    step under the GIL).
    """
    for name in _MODULES:
        module = sys.modules.get(name)
        mapping = getattr(module, "WRITE_LOCKS", None)
        if mapping is None:
            continue
        # A WeakKeyDictionary keeps its entries in ``data``, keyed by weak
        # references: iterating it directly runs Python code.
        data = getattr(mapping, "data", mapping)
        try:
            items = list(data.items())
        except Exception:  # not the mapping we know: leave it alone
            return []
        pairs = []
        for key, lock in items:
            file = key() if data is not mapping else key
            if file is not None:
                pairs.append((file, lock))
        return pairs
    return []
