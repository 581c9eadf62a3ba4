"""``make compat``: does ``forksafe_logging.install()`` change what a correct program sees?

The program is CPython's own ``test.test_logging``, run twice with the same
interpreter and the same environment:

1. *plain*: as it is;
2. *install*: with ``forksafe_logging.install()`` in force in every interpreter
   the run starts, the test runner and every Python subprocess that the tests
   start themselves (``script_helper``, ``multiprocessing`` with ``spawn`` and
   ``forkserver``; forked children inherit it anyway). The hook is
   ``scripts/compat_site/sitecustomize.py``, put first on ``PYTHONPATH``.

Then the suite runs again, plain and with ``install()``, under CPython's own
test runner (``python -m test -j1 -w --fail-env-changed``), for its checks of
what a test file leaves behind: temporary files, threads, processes, logging
handlers, warning filters. A change it reports only with ``install()`` is a
bug of ours too.

A test that fails only in the install run is a bug of ours; one that fails in
both runs is listed but is not our fault. Exit status: 0 when the install run
has no new failure; 1 when it has, or when it hung past ``--timeout`` or
crashed (even if the plain run did too: the rest went unchecked); 2 when the
check could not be made or could not prove that it tested something.

The proof: each interpreter of a run leaves a marker saying whether
``install()`` is in force and which ``forksafe_logging`` it imported, and the
test runner counts, through an audit hook, the Python subprocesses it starts;
every one of them must have left a marker. ``script_helper`` starts
interpreters with ``-I`` (which ignores ``PYTHONPATH``) unless the interpreter
"requires the environment", so the test runner tells it that it does, in both
runs alike.

Usage::

    python scripts/compat.py                  # the interpreter running it
    python scripts/compat.py --python PATH    # another one that imports forksafe_logging
    python scripts/compat.py --all-pythons    # CPython 3.9 to 3.15, repo on PYTHONPATH
    python scripts/compat.py --versions 3.14 3.15   # some of them (fetched if need be)
    python scripts/compat.py --child inherit  # install(child="inherit") instead of install()
    python scripts/compat.py test.test_logging.ConfigDictTest   # a part of the suite only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

SCRIPTS = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS.parent
SITE_DIR = SCRIPTS / "compat_site"
SUITE = "test.test_logging"
DEFAULT_TIMEOUT = 900.0
MINORS = (9, 10, 11, 12, 13, 14, 15)

#: Outcomes that make a test "fail" (``xpass``: an unexpected success).
FAILING = frozenset({"fail", "error", "xpass", "timeout", "crash"})
#: When subtests of one test end differently, the test gets the worst.
SEVERITY = {"ok": 0, "skip": 1, "xfail": 2, "xpass": 3, "fail": 4, "error": 5}

EXIT_OK, EXIT_NEW_FAILURES, EXIT_SETUP = 0, 1, 2


class SetupError(Exception):
    """The check could not be made, or could not show that it tested anything."""


# --------------------------------------------------------------------------
# The worker: runs inside the interpreter under test (3.9+), as
# ``python compat.py --worker RESULTS [TEST ...]``. It writes one JSON line per
# event to RESULTS as it goes, so a run killed at its timeout still says which
# tests ended and which one was running.


def _worker(results_path: str, names: Sequence[str], dump_after: float) -> int:
    import faulthandler
    import traceback
    import unittest

    out = open(results_path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
    pid = os.getpid()

    def emit(**record: Any) -> None:
        if os.getpid() == pid:  # not from a forked child that runs on
            out.write(json.dumps(record) + "\n")
            out.flush()

    counts = {"popen_python": 0, "forks": 0}
    executable = os.path.realpath(sys.executable)

    def audit(event: str, args: Any) -> None:
        if os.getpid() != pid:
            return
        try:
            if event == "os.fork":
                counts["forks"] += 1
            elif event == "subprocess.Popen":
                program, argv = args[0], args[1]
                if program is None:
                    argv = [argv] if isinstance(argv, (str, bytes)) else list(argv)
                    program = argv[0] if argv else None
                if program is not None and os.path.realpath(os.fsdecode(program)) == executable:
                    counts["popen_python"] += 1
        except Exception:  # an audit hook must never break the audited call
            pass

    sys.addaudithook(audit)

    # script_helper.assert_python_ok() and kin add -I or -E, which would make
    # their interpreters ignore PYTHONPATH and thus our sitecustomize, unless
    # the interpreter "requires the environment" (PYTHONHOME and the like).
    import importlib

    script_helper: Any = importlib.import_module("test.support.script_helper")
    script_helper.interpreter_requires_environment = lambda: True

    class Recorder(unittest.TextTestResult):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._outcome: Dict[str, str] = {}
            self._detail: Dict[str, str] = {}

        def _note(self, test: Any, outcome: str, detail: str = "") -> None:
            test_id = test.id()
            if SEVERITY[outcome] >= SEVERITY[self._outcome.get(test_id, "ok")]:
                self._outcome[test_id] = outcome
                if detail:
                    self._detail[test_id] = detail
            if not isinstance(test, unittest.TestCase):  # a fixture: _ErrorHolder
                self._flush(test_id)

        def _flush(self, test_id: str) -> None:
            emit(
                event="done",
                id=test_id,
                outcome=self._outcome.pop(test_id, "ok"),
                detail=self._detail.pop(test_id, ""),
            )

        def startTest(self, test: Any) -> None:
            emit(event="start", id=test.id())
            super().startTest(test)

        def stopTest(self, test: Any) -> None:
            super().stopTest(test)
            self._flush(test.id())

        def addSuccess(self, test: Any) -> None:
            super().addSuccess(test)
            self._note(test, "ok")

        def addFailure(self, test: Any, err: Any) -> None:
            super().addFailure(test, err)
            self._note(test, "fail", self.failures[-1][1])

        def addError(self, test: Any, err: Any) -> None:
            super().addError(test, err)
            self._note(test, "error", self.errors[-1][1])

        def addSkip(self, test: Any, reason: str) -> None:
            super().addSkip(test, reason)
            self._note(test, "skip", reason)

        def addExpectedFailure(self, test: Any, err: Any) -> None:
            super().addExpectedFailure(test, err)
            self._note(test, "xfail")

        def addUnexpectedSuccess(self, test: Any) -> None:
            super().addUnexpectedSuccess(test)
            self._note(test, "xpass")

        def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
            super().addSubTest(test, subtest, err)
            if err is not None:
                failed = issubclass(err[0], test.failureException)
                text = "".join(traceback.format_exception(*err))
                self._note(test, "fail" if failed else "error", "%s\n%s" % (subtest, text))

    faulthandler.enable()
    if dump_after > 0:
        # Print every thread's stack and exit before compat.py kills the run.
        faulthandler.dump_traceback_later(dump_after, exit=True)
    emit(event="begin", pid=pid, version=sys.version.split()[0])
    suite = unittest.defaultTestLoader.loadTestsFromNames(list(names))
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=Recorder)
    result = runner.run(suite)
    faulthandler.cancel_dump_traceback_later()
    fsl = sys.modules.get("forksafe_logging")
    emit(
        event="end",
        tests_run=result.testsRun,
        popen_python=counts["popen_python"],
        forks=counts["forks"],
        fsl_imported=fsl is not None,
        fsl_installed=bool(fsl is not None and fsl.is_installed()),
    )
    out.close()
    return 0


# --------------------------------------------------------------------------
# The driver.


@dataclass
class Interpreter:
    """One interpreter to check, and how its forksafe_logging is found."""

    python: str
    repo_on_path: bool
    #: ``install(child=...)``; empty: install()'s default.
    child: str = ""
    version: str = "?"
    module_file: str = ""
    other_sitecustomize: Optional[str] = None


@dataclass
class Run:
    """What one run of the suite did."""

    mode: str
    outcomes: Dict[str, str] = field(default_factory=dict)
    details: Dict[str, str] = field(default_factory=dict)
    aborted: Optional[str] = None
    aborted_in: Optional[str] = None
    worker_pid: Optional[int] = None
    end: Dict[str, Any] = field(default_factory=dict)
    markers: List[Dict[str, Any]] = field(default_factory=list)
    log: Optional[Path] = None
    seconds: float = 0.0

    def failing(self) -> Dict[str, str]:
        return {t: o for t, o in self.outcomes.items() if o in FAILING}

    def count(self, *outcomes: str) -> int:
        return sum(1 for o in self.outcomes.values() if o in outcomes)


def environment(interp: Interpreter, mode: str, markers: Optional[Path]) -> Dict[str, str]:
    env = dict(os.environ)
    path = [str(SITE_DIR)]
    if interp.repo_on_path:
        path.append(str(REPO_ROOT))
        # Keep the runs from writing __pycache__ into the repository.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["FORKSAFE_COMPAT_MODE"] = mode
    if interp.child:
        env["FORKSAFE_COMPAT_CHILD"] = interp.child
    else:
        env.pop("FORKSAFE_COMPAT_CHILD", None)
    if markers is None:
        env.pop("FORKSAFE_COMPAT_MARKERS", None)
    else:
        env["FORKSAFE_COMPAT_MARKERS"] = str(markers)
    return env


_PROBE = """if 1:
    import json, platform, sys
    site = sys.modules.get("sitecustomize")
    info = {"version": platform.python_version(), "sitecustomize": getattr(site, "__file__", None),
            "preloaded": "forksafe_logging" in sys.modules}
    try:
        import forksafe_logging
    except ImportError as exc:
        info["import_error"] = str(exc)
    else:
        info["module_file"] = forksafe_logging.__file__
        info["installed"] = forksafe_logging.is_installed()
    print(json.dumps(info))
"""


def probe(interp: Interpreter, mode: Optional[str], work: Path) -> Dict[str, Any]:
    """Start the interpreter once with a run's environment and report what it saw."""
    if mode is None:
        env = dict(os.environ)
        env.pop("FORKSAFE_COMPAT_MODE", None)
    else:
        env = environment(interp, mode, None)
    try:
        done = subprocess.run(
            [interp.python, "-c", _PROBE],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError("cannot run %s: %s" % (interp.python, exc)) from exc
    if done.returncode != 0 or not done.stdout.strip():
        raise SetupError(
            "%s failed to start (exit %d):\n%s" % (interp.python, done.returncode, done.stderr)
        )
    if done.stderr.strip():
        raise SetupError("%s complained at start-up:\n%s" % (interp.python, done.stderr))
    info: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return info


def prepare(interp: Interpreter, work: Path) -> None:
    """Check, before the long runs, that both environments do what they should."""
    if not (SITE_DIR / "sitecustomize.py").is_file():
        raise SetupError("%s/sitecustomize.py is missing" % SITE_DIR)
    bare = probe(interp, None, work)
    interp.version = bare["version"]
    other = bare.get("sitecustomize")
    if other and Path(other).resolve().parent != SITE_DIR:
        interp.other_sitecustomize = other
    plain = probe(interp, "plain", work)
    if plain["preloaded"] or plain.get("installed"):
        raise SetupError("the plain environment already has forksafe_logging: %r" % plain)
    installed = probe(interp, "install", work)
    if "import_error" in installed:
        hint = (
            ""
            if interp.repo_on_path
            else " (use --repo-on-path to import it from %s)" % (REPO_ROOT)
        )
        raise SetupError(
            "%s cannot import forksafe_logging: %s%s"
            % (interp.python, installed["import_error"], hint)
        )
    if not installed.get("installed"):
        raise SetupError(
            "sitecustomize did not make install() active in %s: %r" % (interp.python, installed)
        )
    interp.module_file = installed["module_file"]
    package = Path(interp.module_file).resolve().parent
    if interp.repo_on_path and package != REPO_ROOT / "forksafe_logging":
        raise SetupError(
            "forksafe_logging comes from %s, not from %s" % (interp.module_file, REPO_ROOT)
        )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_suite(
    interp: Interpreter,
    mode: str,
    names: Sequence[str],
    work: Path,
    *,
    timeout: float,
    label: Optional[str] = None,
) -> Run:
    """Run the suite once in its own process group, killed at ``timeout``.

    ``mode`` is ``"plain"``, ``"install"`` or ``"logging"`` (only ``import
    logging`` at start-up); ``label`` names the work subdirectory (default:
    ``mode``).
    """
    run = Run(mode)
    base = work / (label or mode)
    base.mkdir()
    markers = base / "markers"
    markers.mkdir()
    cwd = base / "cwd"  # test_logging writes its files (@test_PID_tmp...) into the cwd
    cwd.mkdir()
    results = base / "results.jsonl"
    run.log = base / "output.log"
    dump_after = max(timeout - min(30.0, timeout / 10), 1.0)
    argv = [
        interp.python,
        str(Path(__file__).resolve()),
        "--worker",
        str(results),
        "--dump-after",
        str(dump_after),
        *names,
    ]
    start = time.monotonic()
    timed_out = False
    with open(run.log, "wb") as log:
        proc = subprocess.Popen(
            argv,
            env=environment(interp, mode, markers),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        # Whatever the tests left behind in the session (hung children too).
        _kill_group(proc.pid)
        proc.wait()
    run.seconds = time.monotonic() - start
    _read_results(run, results)
    if not run.end:
        if timed_out or run.seconds >= dump_after:
            run.aborted = "timed out after %.0f s" % run.seconds
            outcome = "timeout"
        else:
            run.aborted = "crashed (exit status %s)" % proc.returncode
            outcome = "crash"
        if run.aborted_in is not None:
            run.aborted += " while running %s" % run.aborted_in
            run.outcomes[run.aborted_in] = outcome
            run.details[run.aborted_in] = "the run %s; see %s" % (run.aborted, run.log)
        else:
            run.outcomes["<%s run of %s>" % (mode, SUITE)] = outcome
    for marker in sorted(markers.glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            run.markers.append(json.loads(marker.read_text(encoding="utf-8")))
    return run


def _read_results(run: Run, results: Path) -> None:
    """Fill ``run`` from the worker's JSON lines; ``aborted_in``: the test left running."""
    running: Optional[str] = None
    if results.exists():
        for line in results.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill
            event = record["event"]
            if event == "begin":
                run.worker_pid = record["pid"]
            elif event == "start":
                running = record["id"]
            elif event == "done":
                run.outcomes[record["id"]] = record["outcome"]
                if record["detail"]:
                    run.details[record["id"]] = record["detail"]
                if record["id"] == running:
                    running = None
            elif event == "end":
                run.end = record
    run.aborted_in = running


def verify(interp: Interpreter, run: Run) -> List[str]:
    """What the markers say about whether the run tested what it should; empty if fine."""
    problems: List[str] = []
    want_installed = run.mode == "install"
    runner = [m for m in run.markers if m["pid"] == run.worker_pid]
    if run.worker_pid is not None and not runner:
        problems.append("sitecustomize did not run in the test runner (pid %s)" % run.worker_pid)
    for m in run.markers:
        if m["error"]:
            problems.append("pid %s (%s): %s" % (m["pid"], " ".join(m["argv"]), m["error"]))
        elif m["installed"] != want_installed:
            problems.append(
                "pid %s (%s): install() %s"
                % (m["pid"], " ".join(m["argv"]), "inactive" if want_installed else "active")
            )
        elif interp.other_sitecustomize and not m["chained"]:
            problems.append(
                "pid %s did not run %s after ours" % (m["pid"], interp.other_sitecustomize)
            )
        elif want_installed and m["module_file"] != interp.module_file:
            problems.append(
                "pid %s imported forksafe_logging from %s, not %s"
                % (m["pid"], m["module_file"], interp.module_file)
            )
    if run.end:
        if run.end["fsl_installed"] != want_installed:
            problems.append(
                "at the end of the run, install() was %s in the test runner"
                % ("not in force" if want_installed else "in force")
            )
        children = [m for m in run.markers if m["ppid"] == run.worker_pid]
        if len(children) < run.end["popen_python"]:
            problems.append(
                "the test runner started %d Python subprocesses, but only %d of them ran "
                "sitecustomize (started with -I, -E or a clean environment?)"
                % (run.end["popen_python"], len(children))
            )
    return problems


def describe(run: Run) -> str:
    parts = [
        "%d tests in %.0f s: %d ok, %d skipped"
        % (len(run.outcomes), run.seconds, run.count("ok", "xfail"), run.count("skip"))
    ]
    parts.append("%d failing" % len(run.failing()))
    if run.end:
        parts.append(
            "install() %s in %d interpreters (the test runner and %d subprocess(es)); %d fork(s)"
            % (
                "active" if run.mode == "install" else "inactive",
                len(run.markers),
                max(len(run.markers) - 1, 0),
                run.end["forks"],
            )
        )
    if run.aborted:
        parts.append("ABORTED: " + run.aborted)
    return "; ".join(parts)


def excerpt(text: str, lines: int = 25) -> str:
    kept = text.rstrip().splitlines()
    if len(kept) > lines:
        kept = ["...", *kept[-lines:]]
    return "\n".join("        " + line for line in kept)


def log_tail(run: Run, lines: int = 60) -> str:
    if run.log is None or not run.log.exists():
        return ""
    return excerpt(run.log.read_text(encoding="utf-8", errors="replace"), lines)


def loadable(test_id: str) -> bool:
    """A test id that unittest can load by name (not a class or module fixture)."""
    return re.fullmatch(r"test\.test_logging\.\w+\.\w+", test_id) is not None


def check(interp: Interpreter, names: Sequence[str], timeout: float, keep: bool) -> int:
    """Run the suite plain and with install(), compare, report; return the exit status."""
    work = Path(tempfile.mkdtemp(prefix="forksafe-compat-"))
    status = EXIT_SETUP
    try:
        status = _check(interp, names, timeout, work)
    except SetupError as exc:
        print("ERROR: %s" % exc)
        print("test_logging on %s: check not made (setup error)" % interp.version)
    finally:
        if keep or (status != EXIT_OK and any(work.iterdir())):
            print("(work directory kept: %s)" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
    return status


def _check(interp: Interpreter, names: Sequence[str], timeout: float, work: Path) -> int:
    prepare(interp, work)
    print("== %s on %s (%s)" % (SUITE, interp.version, interp.python))
    print("forksafe_logging: %s" % interp.module_file)
    print("installed with: install(%s)" % ("child=%r" % interp.child if interp.child else ""))
    if interp.other_sitecustomize:
        print("another sitecustomize is installed: %s (chained to)" % interp.other_sitecustomize)
    sys.stdout.flush()
    runs: Dict[str, Run] = {}
    for mode in ("plain", "install"):
        run = run_suite(interp, mode, names, work, timeout=timeout)
        runs[mode] = run
        print("%-8s run: %s" % (mode, describe(run)))
        sys.stdout.flush()
        if run.aborted:
            print("    end of its output:\n%s" % log_tail(run))
    problems = ["%s run: %s" % (mode, p) for mode, run in runs.items() for p in verify(interp, run)]
    if problems:
        raise SetupError("the runs did not test what they should:\n  " + "\n  ".join(problems))
    plain, inst = runs["plain"], runs["install"]
    plain_fail, inst_fail = plain.failing(), inst.failing()
    new = sorted(t for t in inst_fail if t not in plain_fail)
    both = sorted(t for t in inst_fail if t in plain_fail)
    fixed = sorted(t for t in plain_fail if t not in inst_fail and t in inst.outcomes)
    changed = sorted(
        t
        for t in plain.outcomes
        if t in inst.outcomes
        and plain.outcomes[t] != inst.outcomes[t]
        and t not in plain_fail
        and t not in inst_fail
    )
    not_run = sorted(t for t in plain.outcomes if t not in inst.outcomes)

    print("\nFail only with install() (bugs of ours): %d" % len(new))
    for t in new:
        note = "" if t in plain.outcomes else ", did not run in the plain run"
        print("    %s [%s%s]" % (t, inst_fail[t], note))
        print(excerpt(inst.details.get(t, "")))
    print("Fail in both runs (pre-existing, not ours): %d" % len(both))
    for t in both:
        print("    %s [plain: %s, install: %s]" % (t, plain_fail[t], inst_fail[t]))
    if fixed:
        print("Fail only in the plain run (flaky?): %d" % len(fixed))
        for t in fixed:
            print("    %s [%s]" % (t, plain_fail[t]))
            print(excerpt(plain.details.get(t, ""), 10))
    if changed:
        print("Other outcome changes (plain -> install): %d" % len(changed))
        for t in changed:
            print("    %s: %s -> %s" % (t, plain.outcomes[t], inst.outcomes[t]))
    if not_run:
        print("Tests of the plain run that the install run did not reach: %d" % len(not_run))

    # A failure that also happens with nothing but `import logging` at start-up
    # comes from the sitecustomize having to import logging before the test
    # does (3.13's test_relativeCreated_has_higher_precision fakes the clock
    # before importing logging): the harness, not install().
    artifacts = triage(interp, new, work, timeout) if new else []
    ours = [t for t in new if t not in artifacts]
    print()
    env_ok = check_regrtest(interp, names, work, timeout)

    print(
        "\n%s on %s: %d tests; plain: %d failures; with install(): %d failures; "
        "new failures: %d"
        % (
            SUITE.rsplit(".", maxsplit=1)[-1],
            interp.version,
            len(plain.outcomes),
            len(plain_fail),
            len(inst_fail),
            len(ours),
        )
        + ("; start-up import artifacts: %d" % len(artifacts) if artifacts else "")
        + ("; install() run %s" % inst.aborted if inst.aborted else "")
        + ("; environment changed by install()" if not env_ok else "")
    )
    if inst.aborted:
        print(
            "FAILED: the install() run %s; tests of the plain run it did not reach: %d"
            % (inst.aborted, len(not_run))
        )
    if not env_ok:
        print("FAILED: regrtest's install run is worse than its plain run (see above)")
    return EXIT_NEW_FAILURES if ours or inst.aborted or not env_ok else EXIT_OK


@dataclass
class EnvRun:
    """What one run of the suite under CPython's own runner (regrtest) said."""

    mode: str
    returncode: Optional[int] = None
    result: str = "?"
    #: regrtest's "Warning -- ..." lines: what the tests left changed.
    warnings: List[str] = field(default_factory=list)
    markers: List[Dict[str, Any]] = field(default_factory=list)
    log: Optional[Path] = None


#: The kind of a regrtest warning, without the names, numbers and addresses.
_WARNING_KIND = re.compile(r"Warning -- ([^:(]*)")


_RESULT = re.compile(r"(?:== Tests r|R)esult: ([A-Za-z ,]+?)(?: ==)?$")


def passed(result: str) -> bool:
    """regrtest's final state is a pass ("SUCCESS", or "FAILURE then SUCCESS" after its rerun)."""
    return result.rsplit(" then ", maxsplit=1)[-1] == "SUCCESS"


def warning_kind(line: str) -> str:
    match = _WARNING_KIND.search(line)
    return match.group(1).strip() if match else line


def run_regrtest(
    interp: Interpreter, mode: str, names: Sequence[str], work: Path, timeout: float
) -> EnvRun:
    """Run the suite with ``python -m test -j1 --fail-env-changed``, in its own process group.

    regrtest's own checks of what a test file left behind are the point:
    temporary files (checked by the parent, after the worker process has
    exited: what finalization and atexit leave counts too), threads,
    processes, ``logging._handlers`` and ``_handlerList``, warning filters,
    the environment. With ``-j1`` the tests run in a worker process which,
    like the parent, comes through our sitecustomize.
    """
    run = EnvRun(mode)
    base = work / ("regrtest-" + mode)
    base.mkdir()
    markers = base / "markers"
    markers.mkdir()
    cwd = base / "cwd"
    cwd.mkdir()
    run.log = base / "output.log"
    files = sorted({name.split(".")[1] for name in names if name.startswith("test.")})
    with open(run.log, "wb") as log:
        proc = subprocess.Popen(
            # -w: a test that fails is run once more ("FAILURE then SUCCESS"):
            # test_logging has timing-dependent tests, and one of them failed
            # once under load in an install run that was otherwise clean.
            [interp.python, "-m", "test", "-j1", "-w", "--fail-env-changed", *files],
            env=environment(interp, mode, markers),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            run.returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.result = "TIMEOUT"
        _kill_group(proc.pid)
        proc.wait()
    text = run.log.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        result = _RESULT.match(line)
        if result:  # "Result: X" (3.11+) or "== Tests result: X ==" (3.9+)
            run.result = result.group(1)
        elif "Warning -- " in line and line not in run.warnings:
            run.warnings.append(line.strip())
    for marker in sorted(markers.glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            run.markers.append(json.loads(marker.read_text(encoding="utf-8")))
    return run


def check_regrtest(interp: Interpreter, names: Sequence[str], work: Path, timeout: float) -> bool:
    """regrtest plain and with install(); False if the install run is worse or untested."""
    runs = {mode: run_regrtest(interp, mode, names, work, timeout) for mode in ("plain", "install")}
    plain, inst = runs["plain"], runs["install"]
    for run in (plain, inst):
        print(
            "regrtest %-8s run: %s, %d warning(s) about the environment"
            % (run.mode, run.result, len(run.warnings))
        )
        for line in run.warnings:
            print("    " + line)
    # The parent and its worker process both: every one with install() in force.
    if len(inst.markers) < 2 or not all(m.get("installed") for m in inst.markers):
        raise SetupError(
            "regrtest's install run did not have install() in force in its parent and "
            "worker: %r" % [(m.get("argv"), m.get("installed")) for m in inst.markers]
        )
    if any(m.get("installed") for m in plain.markers):
        raise SetupError("regrtest's plain run had install() in force")
    plain_kinds = {warning_kind(w) for w in plain.warnings}
    new = [w for w in inst.warnings if warning_kind(w) not in plain_kinds]
    bad_result = not passed(inst.result) and passed(plain.result)
    worse = "; result %s where the plain run had SUCCESS" % inst.result if bad_result else ""
    print("regrtest: environment changes only with install() (ours): %d%s" % (len(new), worse))
    for line in new:
        print("    " + line)
    if bad_result or inst.result == "TIMEOUT":
        print("    see %s" % inst.log)
    return not new and not bad_result and inst.result != "TIMEOUT"


def triage(interp: Interpreter, new: Sequence[str], work: Path, timeout: float) -> List[str]:
    """Run the new failures again, alone, plain, with only ``logging`` imported, with install().

    The middle mode tells apart the failures that ``install()`` causes from
    those that come from importing ``logging`` when the interpreter starts,
    which the sitecustomize has to do before the test imports it itself.
    Returns the latter.
    """
    reruns = [t for t in new if loadable(t)]
    artifacts: List[str] = []
    if not reruns:
        return artifacts
    print("\nThe new failures again, alone, in three modes (plain / only `import logging` at")
    print("start-up / install()):")
    sys.stdout.flush()
    again = {
        mode: run_suite(interp, mode, reruns, work, timeout=timeout, label=mode + "-rerun")
        for mode in ("plain", "logging", "install")
    }
    for t in reruns:
        plain, early, inst = (again[m].outcomes.get(t, "not run") for m in again)
        if inst not in FAILING:
            verdict = "does not fail alone: flaky, or depends on the tests before it"
        elif plain in FAILING:
            verdict = "fails alone in the plain run too: flaky?"
        elif early in FAILING:
            artifacts.append(t)
            verdict = (
                "comes from importing logging at interpreter start-up (before the test "
                "does), which `import forksafe_logging` does; not from the fork hooks"
            )
        else:
            verdict = "caused by forksafe_logging.install()"
        print("    %s: %s / %s / %s: %s" % (t, plain, early, inst, verdict))
    return artifacts


def find_pythons(minors: Sequence[int]) -> Dict[int, Optional[str]]:
    """An interpreter for each minor version (``None``: none to be had).

    pyenv's newest of that version, else ``python3.X`` on ``PATH``, else the
    one ``scripts/get-python.sh`` fetches (and caches), as the test command
    finds them.
    """
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv"), "/root/.pyenv"]
    found: Dict[int, Optional[str]] = dict.fromkeys(minors)
    best: Dict[int, int] = {}
    for root in filter(None, roots):
        versions = Path(root) / "versions"
        if not versions.is_dir():
            continue
        for entry in versions.iterdir():
            match = re.fullmatch(r"3\.(\d+)\.(\d+)", entry.name)
            python = entry / "bin" / "python"
            if not match or not os.access(python, os.X_OK):
                continue
            minor, micro = int(match.group(1)), int(match.group(2))
            if minor in found and micro > best.get(minor, -1):
                best[minor] = micro
                found[minor] = str(python)
    for minor in minors:
        if found[minor] is None:
            found[minor] = shutil.which("python3.%d" % minor) or _fetch(minor)
    return found


def _fetch(minor: int) -> Optional[str]:
    """``scripts/get-python.sh 3.X``'s interpreter; it says on stderr what it did, or why not."""
    done = subprocess.run(
        ["bash", str(SCRIPTS / "get-python.sh"), "3.%d" % minor],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run CPython's test_logging plain and with forksafe_logging.install() "
        "in every interpreter it starts; fail on any failure the plain run lacks."
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter to check (default: this one, %(default)s)",
    )
    group.add_argument(
        "--all-pythons",
        action="store_true",
        help="check CPython 3.9 to 3.15 (as --versions with all of them)",
    )
    group.add_argument(
        "--versions",
        nargs="+",
        metavar="3.X",
        help="check these CPython versions (pyenv's, python3.X on PATH, or fetched by "
        "scripts/get-python.sh), with the repository on PYTHONPATH",
    )
    parser.add_argument(
        "--repo-on-path",
        action="store_true",
        help="put %s on PYTHONPATH so forksafe_logging imports from it" % REPO_ROOT,
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds one run of the suite may take (default %(default)s)",
    )
    parser.add_argument(
        "--child",
        default="",
        metavar="MODE",
        help="call install(child=MODE) instead of install() (default: install()'s default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "tests",
        nargs="*",
        default=[SUITE],
        help="what to run (default %(default)s), e.g. test.test_logging.ConfigDictTest",
    )
    parser.add_argument("--worker", metavar="RESULTS", help=argparse.SUPPRESS)
    parser.add_argument("--dump-after", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        return _worker(args.worker, args.tests, args.dump_after)

    if not args.all_pythons and not args.versions:
        # The runs start in work directories of their own.
        python = os.path.abspath(args.python) if os.sep in args.python else args.python
        interp = Interpreter(python, args.repo_on_path, args.child)
        return check(interp, args.tests, args.timeout, args.keep)

    statuses: Dict[str, int] = {}
    skipped: List[str] = []
    if args.versions:
        try:
            minors = [int(v.split(".")[1]) for v in args.versions]
        except (IndexError, ValueError):
            parser.error("--versions takes versions like 3.14")
    else:
        minors = list(MINORS)
    for minor, python in find_pythons(minors).items():
        if python is None:
            skipped.append("3.%d" % minor)
            continue
        statuses[python] = check(
            Interpreter(python, True, args.child), args.tests, args.timeout, args.keep
        )
        print()
    print("Interpreters checked: %d; skipped (not found): %s" % (len(statuses), skipped or "none"))
    for python, status in statuses.items():
        print("    %s: %s" % (python, {0: "ok", 1: "NEW FAILURES", 2: "SETUP ERROR"}[status]))
    if not statuses:
        return EXIT_SETUP
    if EXIT_NEW_FAILURES in statuses.values():
        return EXIT_NEW_FAILURES
    return max(statuses.values())


if __name__ == "__main__":
    sys.exit(main())
