"""The program of "Why your multiprocessing Pool is stuck (it's full of sharks!)".

Records go through a ``QueueHandler`` into a ``queue.Queue``; a
``QueueListener`` thread writes them to a file; another thread logs in a loop;
then a ``multiprocessing.Pool`` (start method ``fork``) starts and its
children log. Without the library a child often inherits the queue's mutex
held by the logging thread, and blocks on its first log call forever. With
``spawn`` or ``forkserver`` (the default on Linux from 3.14) it never blocks,
but the children have no handler and their lines are lost.

Run as ``python -m forksafe_logging._article [--install] [--handler stdlib|forksafe]
[--start-method METHOD] LOGFILE``; it exits 0 when every task finished and
wrote its line once, 3 when lines are missing or doubled.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import multiprocessing
import queue
import threading
from typing import List, Optional

#: Pool processes and tasks per run; a worker per task (maxtasksperchild=1)
#: makes one fork per task, enough that one run hangs often.
PROCESSES = 4
TASKS = 32


def _task(n: int) -> int:
    logging.getLogger("article.child").info("task %d done", n)
    return n


def _spam(stop: threading.Event) -> None:
    log = logging.getLogger("article.spam")
    while not stop.is_set():
        log.info("spam")


#: Exit status of a run whose tasks all finished but whose lines are not all there once.
LOST = 3


def run(
    logfile: str, use_library: bool, handler: str = "stdlib", start_method: str = "fork"
) -> List[int]:
    """Run the article's program once; return the results of the tasks.

    ``handler="forksafe"`` puts ``forksafe_logging.QueueHandler`` where the
    article has the stdlib ``QueueHandler`` and ``QueueListener``.
    """
    if use_library:
        import forksafe_logging

        forksafe_logging.install()
    root = logging.getLogger()
    listener: Optional[logging.handlers.QueueListener] = None
    if handler == "forksafe":
        import forksafe_logging

        root.addHandler(forksafe_logging.QueueHandler([logging.FileHandler(logfile)]))
    else:
        q: queue.Queue[logging.LogRecord] = queue.Queue()
        listener = logging.handlers.QueueListener(q, logging.FileHandler(logfile))
        listener.start()
        root.addHandler(logging.handlers.QueueHandler(q))
    root.setLevel(logging.INFO)
    stop = threading.Event()
    spammer = threading.Thread(target=_spam, args=(stop,), daemon=True)
    spammer.start()
    try:
        context = multiprocessing.get_context(start_method)
        with context.Pool(PROCESSES, maxtasksperchild=1) as pool:
            return pool.map(_task, range(TASKS))
    finally:
        stop.set()
        spammer.join()
        if use_library:
            import forksafe_logging

            # What the children sent is in the listener's sockets, not yet
            # necessarily handled, when map() returns.
            forksafe_logging.flush(10)
        if listener is not None:
            listener.stop()


def lines_once(logfile: str) -> bool:
    """Whether every task's line is in ``logfile``, once."""
    with open(logfile, encoding="utf-8") as f:
        found = [line for line in f if line.startswith("task ")]
    return sorted(found) == sorted("task %d done\n" % n for n in range(TASKS))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("logfile")
    parser.add_argument("--install", action="store_true", help="call forksafe_logging.install()")
    parser.add_argument("--handler", choices=["stdlib", "forksafe"], default="stdlib")
    parser.add_argument(
        "--start-method", choices=multiprocessing.get_all_start_methods(), default="fork"
    )
    args = parser.parse_args(argv)
    results = run(args.logfile, args.install, args.handler, args.start_method)
    if results != list(range(TASKS)):
        return 1
    return 0 if lines_once(args.logfile) else LOST


if __name__ == "__main__":
    raise SystemExit(main())
