"""``python -m forksafe_logging``: see :mod:`forksafe_logging._demo`."""

from forksafe_logging._demo import main

raise SystemExit(main())
