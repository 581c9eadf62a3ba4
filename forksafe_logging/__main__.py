"""``python -m forksafe_logging``: see :mod:`forksafe_logging._cli`."""

from forksafe_logging._cli import main

raise SystemExit(main())
