"""``python -m forksafe_logging doctor``: a program's logging set-up, reported at its first fork.

The target runs in this process, so that its logging configuration and its
threads are the ones :func:`forksafe_logging._doctor.examine` looks at:

- ``--module NAME`` imports the module: its module-level code runs, as when a
  server or a worker pool loads an application before forking.
- ``--script PATH`` runs the script as ``python PATH`` would, with
  ``__name__ == "__main__"``, so set-up done in a ``main()`` runs too. It is
  stopped at its first fork: ``os.fork()``, ``os.forkpty()`` and
  ``multiprocessing``'s ``Process.start()`` (any start method) are replaced,
  for the run, by a function that takes the report and ends the process at
  once. No child is ever started, and the report is of the very moment a
  fork would have copied the process, other threads still running.
- ``--article``: the article's program (:mod:`forksafe_logging._article`),
  as a script, logging to a temporary file.

Whichever ends first, the first fork, the end of the target, or ``--timeout``
seconds, the report is printed and the process exits right away (through
``os._exit``): nothing the target started is waited for, and its ``finally``
blocks and exit handlers do not run. While the target runs, what it writes
to standard output goes to standard error, so standard output carries only
the report.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing.process
import os
import runpy
import shutil
import sys
import tempfile
import threading
import traceback
from typing import Any, Callable, Dict, List, NoReturn, Optional

from forksafe_logging import _doctor, _frames, _settings

#: Seconds a target may run without forking before it is reported on as it is.
DEFAULT_TIMEOUT = 10.0

#: Exit statuses: a report was printed; the target failed; the command line was wrong.
REPORTED, TARGET_FAILED, USAGE = 0, 1, 2


def add_command(commands: Any) -> None:
    """Add the ``doctor`` subcommand to ``python -m forksafe_logging``."""
    parser = commands.add_parser(
        "doctor",
        help="list what a fork would copy unsafely in a program's logging",
        description="Run a program's logging set-up, stop it at its first fork, and list "
        "what that fork would copy unsafely without forksafe_logging, and what install() "
        "does about each.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--script",
        metavar="PATH",
        help="run PATH as a program (__name__ == '__main__') until its first fork",
    )
    target.add_argument(
        "--module", metavar="NAME", help="import module NAME (its module-level code runs)"
    )
    target.add_argument(
        "--article", action="store_true", help="the article's program, until its first fork"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--child",
        choices=_settings.CHILD_MODES,
        help="describe what install(child=...) does (default: the mode in force, else forward)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="report after this many seconds if the target has neither forked nor ended "
        "(default %(default)s)",
    )
    parser.add_argument(
        "args", nargs="*", metavar="ARG", help="arguments for the script (put -- before them)"
    )
    parser.set_defaults(run=lambda args: run(args, parser))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the target and print the report; on success the process ends in here."""
    if not args.timeout > 0:
        parser.error("--timeout must be a number of seconds > 0")
    if args.args and not args.script:
        parser.error("arguments after the options are for --script only: %s" % " ".join(args.args))
    cleanup: List[Callable[[], None]] = []
    if args.article:
        from forksafe_logging import _article  # for --article only

        tmp = tempfile.mkdtemp(prefix="forksafe-doctor-")
        cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        target = _script(_article.__file__, [os.path.join(tmp, "app.log")], "the article's program")
    elif args.script:
        if not os.path.isfile(args.script):
            parser.error("--script %s: no such file" % args.script)
        target = _script(args.script, args.args, "the script")
    else:
        problem = _unimportable(args.module)
        if problem:
            parser.error("--module %s: %s" % (args.module, problem))
        target = _module(args.module)
    _Doctor(args, target, cleanup).run()


def _unimportable(name: str) -> Optional[str]:
    """Why module ``name`` cannot be found, or ``None`` (importing its parents if needed)."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None if found is not None else "no module named %r" % name


class _Target:
    """What to run, and the words for how it went."""

    def __init__(self, run: Callable[[], object], name: str, ended: str, failed: str) -> None:
        self.run = run
        self.name = name
        self.ended = ended
        self.failed = failed


def _script(path: str, argv: List[str], name: str) -> _Target:
    def run_script() -> object:
        # As `python PATH ARGS` would: argv, and the script's directory first on sys.path.
        sys.argv[:] = [path, *argv]
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        return runpy.run_path(path, run_name="__main__")

    return _Target(
        run_script,
        name,
        "%s ended without forking; this is the state it left." % name.capitalize(),
        "%s raised an exception before its first fork (above)." % name,
    )


def _module(name: str) -> _Target:
    # `python -m forksafe_logging` put the current directory first on sys.path.
    return _Target(
        lambda: importlib.import_module(name),
        "module %s" % name,
        "Imported module %s; this is the state its import left." % name,
        "importing module %s raised an exception (above)." % name,
    )


class _Doctor:
    """Runs one target, and reports once: at its first fork, at its end, or at the timeout."""

    def __init__(
        self, args: argparse.Namespace, target: _Target, cleanup: List[Callable[[], None]]
    ) -> None:
        self.mode: Optional[str] = args.child
        self.as_json: bool = args.json
        self.timeout: float = args.timeout
        self.target = target
        self.cleanup = cleanup
        # One report per run: the first of the fork, the end and the watchdog wins.
        self.reporting = threading.Lock()
        self.done = threading.Event()
        self.watchdog = threading.Thread(
            target=self._watch, name="forksafe_logging doctor watchdog", daemon=True
        )
        # Standard output is for the report: the target's goes to standard error.
        sys.stdout.flush()
        self.out = os.dup(1)
        os.dup2(2, 1)

    def run(self) -> NoReturn:
        self._stop_at_forks()
        self.watchdog.start()
        try:
            self.target.run()
        except SystemExit as exc:
            if exc.code not in (None, 0):
                self._fail(
                    "%s exited with status %r before its first fork." % (self.target.name, exc.code)
                )
        except BaseException:
            traceback.print_exc()
            self._fail(self.target.failed)
        self._report(self.target.ended, threading.current_thread())

    def _stop_at_forks(self) -> None:
        doctor = self

        def fork() -> NoReturn:
            doctor._at_fork("os.fork()")

        def forkpty() -> NoReturn:
            doctor._at_fork("os.forkpty()")

        def start(process: Any) -> NoReturn:
            doctor._at_fork("multiprocessing's Process.start()")

        # Replaced for the rest of this process's life: it ends at the report.
        os.fork = fork
        os.forkpty = forkpty
        multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign,assignment]

    def _at_fork(self, call: str) -> NoReturn:
        frame = _frames.outside_stdlib(sys._getframe(1), also=(__file__,))
        caller = _frames.position(frame) if frame is not None else "the standard library"
        self._report(
            "Stopped %s at its first fork: %s, called by %s." % (self.target.name, call, caller),
            threading.current_thread(),
            _line_of(frame) if frame is not None else None,
        )

    def _watch(self) -> None:
        if not self.done.wait(self.timeout):
            self._report(
                "%s had neither forked nor ended after %s s; this is its state then, as if "
                "its main thread forked." % (self.target.name.capitalize(), self.timeout),
                threading.main_thread(),
            )

    def _report(
        self, moment: str, forking: threading.Thread, fork_at: Optional[str] = None
    ) -> NoReturn:
        with self.reporting:
            self.done.set()
            diagnosis = _doctor.examine(self.mode, forking, ignore=[self.watchdog.ident or 0])
            if self.as_json:
                found: Dict[str, Any] = {"moment": moment, **diagnosis.to_dict()}
                found["advice"] = diagnosis.advice(fork_at)
                text = json.dumps(found, indent=2)
            else:
                text = "%s\n\n%s" % (_doctor.fill(moment), diagnosis.report(fork_at))
            self._exit(REPORTED, text + "\n")

    def _fail(self, message: str) -> NoReturn:
        with self.reporting:
            self.done.set()
            sys.stderr.write("python -m forksafe_logging doctor: error: %s\n" % message)
            self._exit(TARGET_FAILED, "")

    def _exit(self, status: int, report: str) -> NoReturn:
        data = report.encode("utf-8")
        while data:
            data = data[os.write(self.out, data) :]
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # the target may have closed or replaced it
                pass
        for step in self.cleanup:
            step()
        # Without waiting for anything the target started (see the module docstring).
        os._exit(status)


def _line_of(frame: Any) -> str:
    """``path, line N`` of a frame: the path as the user would type it from here."""
    path = frame.f_code.co_filename
    if not path.startswith("<"):
        try:
            relative = os.path.relpath(path)
        except OSError:  # the target removed the working directory
            relative = os.pardir
        path = path if relative.startswith(os.pardir) else relative
    return "%s, line %d" % (path, frame.f_lineno)
