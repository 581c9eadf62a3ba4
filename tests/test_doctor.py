"""The fork-hazard report: each hazard found when configured, and only then; the CLI.

The in-process tests configure logging on loggers of their own and look only
at hazards naming them: the test process has pytest's handlers too. The CLI
runs in a fresh interpreter under a timeout, as a user runs it.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import logging.handlers
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import types
import weakref
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from conftest import PACKAGE_HOME, Scenario, run_in_own_group
from scenario_lib import Holder

import forksafe_logging
from forksafe_logging import Hazard, diagnose

pytestmark = pytest.mark.timeout(60)


def found(kind: str, needle: str, child: Optional[str] = None) -> List[Hazard]:
    """The hazards of ``kind`` whose ``where`` mentions ``needle``."""
    return [h for h in diagnose(child).hazards if h.kind == kind and needle in h.where]


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of the test's own, emptied (and its handlers closed) afterwards."""
    log = logging.getLogger("doctor-test.%s" % request.node.name)
    yield log
    for handler in log.handlers[:]:
        log.removeHandler(handler)
        handler.close()


class TestQueues:
    def test_queue_queue(self, logger: logging.Logger) -> None:
        """A queue.Queue behind a QueueHandler: its locks; install() re-initializes them."""
        q: queue.Queue[Any] = queue.Queue()
        logger.addHandler(logging.handlers.QueueHandler(q))
        logger.propagate = False
        logger.warning("waiting")
        [hazard] = found("queue", logger.name, "inherit")
        assert hazard.where.startswith("queue.Queue behind QueueHandler on logger")
        assert "mutex" in hazard.detail
        assert "1 record waiting" in hazard.detail
        assert "re-initializes the mutex" in hazard.remedy
        assert hazard.covered

    def test_simple_queue(self, logger: logging.Logger) -> None:
        """A queue.SimpleQueue: no lock, but what waits in it is copied."""
        logger.addHandler(logging.handlers.QueueHandler(queue.SimpleQueue()))
        [hazard] = found("queue", logger.name)
        assert hazard.where.startswith("queue.SimpleQueue behind")
        assert "no lock" in hazard.detail

    def test_multiprocessing_queue(self, logger: logging.Logger) -> None:
        """A multiprocessing.Queue: its feeder state after a plain os.fork()."""
        q: Any = multiprocessing.get_context("fork").Queue()
        try:
            logger.addHandler(logging.handlers.QueueHandler(q))
            [hazard] = found("queue", logger.name, "inherit")
            assert hazard.where.startswith("multiprocessing.queues.Queue behind")
            assert "feeder thread" in hazard.detail
            assert hazard.covered
        finally:
            q.close()

    def test_multiprocessing_simple_queue_is_no_hazard(self, logger: logging.Logger) -> None:
        """A multiprocessing.SimpleQueue is shared with the children by design: not listed."""
        q: Any = multiprocessing.get_context("fork").SimpleQueue()
        try:
            logger.addHandler(logging.handlers.QueueHandler(q))
            assert found("queue", logger.name) == []
        finally:
            q.close()

    def test_unknown_queue_class(self, logger: logging.Logger) -> None:
        """A queue of a class install() does not know: not covered, except by forwarding."""

        class Homemade:
            def put_nowait(self, item: object) -> None:
                pass

        logger.addHandler(logging.handlers.QueueHandler(Homemade()))  # type: ignore[arg-type]
        [inherit] = found("queue", logger.name, "inherit")
        assert "Homemade" in inherit.where
        assert not inherit.covered
        [forward] = found("queue", logger.name, "forward")
        assert forward.covered


class TestListener:
    def test_running_listener(self, logger: logging.Logger) -> None:
        """A running QueueListener on an in-process queue; gone once it is stopped."""
        q: queue.Queue[Any] = queue.Queue()
        listener = logging.handlers.QueueListener(q, logging.NullHandler())
        listener.start()
        try:
            logger.addHandler(logging.handlers.QueueHandler(q))
            thread_name = listener._thread.name  # type: ignore[attr-defined]
            hazards = [h for h in diagnose("inherit").hazards if h.kind == "listener-thread"]
            [hazard] = [h for h in hazards if thread_name in h.where]
            assert "starts the listener again" in hazard.remedy
            [q_hazard] = found("queue", logger.name)
            assert "read by the QueueListener in thread %r" % thread_name in q_hazard.where
            # Its thread is reported as the listener's, not as another thread.
            assert found("thread", thread_name) == []
        finally:
            listener.stop()
        assert [h for h in diagnose().hazards if thread_name in h.where] == []

    def test_listener_on_multiprocessing_queue_is_no_hazard(self) -> None:
        """A listener reading a multiprocessing.Queue is what children write to: not listed."""
        q: Any = multiprocessing.get_context("fork").Queue()
        listener = logging.handlers.QueueListener(q, logging.NullHandler())
        listener.start()
        try:
            thread_name = listener._thread.name  # type: ignore[attr-defined]
            assert found("listener-thread", thread_name) == []
            assert found("thread", thread_name) == []
            # The queue is listed for what a plain os.fork() does to it.
            assert found("queue", thread_name)
        finally:
            listener.stop()
            q.close()


class TestHandlerLocks:
    def test_create_lock_override(self, logger: logging.Logger) -> None:
        """A class whose createLock() does not register with logging: its lock is listed."""

        class OwnLock(logging.Handler):
            def createLock(self) -> None:
                self.lock = threading.RLock()

            def emit(self, record: logging.LogRecord) -> None:
                pass

        logger.addHandler(OwnLock())
        [hazard] = found("handler-lock", logger.name, "inherit")
        assert "OwnLock" in hazard.where
        assert "attribute 'lock', a threading.RLock" in hazard.detail
        assert "re-initializes it" in hazard.remedy
        assert hazard.covered

    def test_subclass_with_stdlib_lock_is_no_hazard(self, logger: logging.Logger) -> None:
        """A subclass that keeps Handler.createLock(): logging re-initializes its lock."""

        class Plain(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                pass

        logger.addHandler(Plain())
        assert found("handler-lock", logger.name) == []

    def test_extra_lock(self, logger: logging.Logger) -> None:
        """A lock kept in another attribute is listed, by the attribute's name."""

        class Rotating(logging.Handler):
            def __init__(self) -> None:
                super().__init__()
                self.rotation_lock = threading.Lock()

            def emit(self, record: logging.LogRecord) -> None:
                pass

        logger.addHandler(Rotating())
        [hazard] = found("handler-lock", logger.name)
        assert "'rotation_lock' holds a threading.Lock" in hazard.detail

    def test_lock_that_cannot_be_reinitialized(self, logger: logging.Logger) -> None:
        """A lock without _at_fork_reinit() is not covered outside forward mode."""

        class FakeLock:
            def acquire(self, *args: Any) -> bool:
                return True

            def release(self) -> None:
                pass

        class Odd(logging.Handler):
            def createLock(self) -> None:
                self.lock = FakeLock()  # type: ignore[assignment]

            def emit(self, record: logging.LogRecord) -> None:
                pass

        logger.addHandler(Odd())
        [inherit] = found("handler-lock", logger.name, "inherit")
        assert not inherit.covered
        assert "_at_fork_reinit" in inherit.remedy
        [forward] = found("handler-lock", logger.name, "forward")
        assert forward.covered


class TestStreams:
    def test_file_handler(self, logger: logging.Logger, tmp_path: Path) -> None:
        """A FileHandler writes to a buffered file object: listed, with its path."""
        logger.addHandler(logging.FileHandler(str(tmp_path / "app.log")))
        [hazard] = found("stream", logger.name)
        assert hazard.where.startswith("FileHandler(%r)" % str(tmp_path / "app.log"))
        assert "gh-84579" in hazard.detail
        assert "second time" not in hazard.detail  # the stdlib class flushes each record

    def test_custom_stream_handler_may_buffer(self, logger: logging.Logger) -> None:
        """A stream handler of another class may hold bytes: the parent flushes them."""

        class Custom(logging.StreamHandler):  # type: ignore[type-arg]
            pass

        with open(os.devnull, "w") as stream:
            logger.addHandler(Custom(stream))
            [hazard] = found("stream", logger.name, "inherit")
            assert "second time" in hazard.detail
            assert "flushes the stream" in hazard.remedy

    def test_streams_without_descriptor_or_not_open(
        self, logger: logging.Logger, tmp_path: Path
    ) -> None:
        """A StringIO, or a delayed FileHandler not yet open, has no C lock to inherit."""
        logger.addHandler(logging.StreamHandler(io.StringIO()))
        logger.addHandler(logging.FileHandler(str(tmp_path / "later.log"), delay=True))
        assert found("stream", logger.name) == []


class TestBuffersAndSockets:
    def test_memory_handler(self, logger: logging.Logger) -> None:
        """A MemoryHandler's records are copied: listed with their count; its target too."""
        target = logging.StreamHandler(io.StringIO())
        logger.addHandler(logging.handlers.MemoryHandler(100, target=target))
        logger.propagate = False
        logger.warning("one")
        logger.warning("two")
        [hazard] = found("buffer", logger.name, "inherit")
        assert hazard.where.startswith("MemoryHandler(capacity=100)")
        assert "(2 now)" in hazard.detail
        assert "empties its copy" in hazard.remedy

    def test_socket_handler(self, logger: logging.Logger) -> None:
        """A SocketHandler (TCP) is listed; finding it opens no connection."""
        handler = logging.handlers.SocketHandler("127.0.0.1", 9)
        logger.addHandler(handler)
        [hazard] = found("socket", logger.name, "inherit")
        assert hazard.where.startswith("SocketHandler(127.0.0.1:9)")
        assert "none yet" in hazard.detail
        assert handler.sock is None

    def test_tcp_syslog_handler(self, logger: logging.Logger) -> None:
        """A SysLogHandler over TCP is listed, as connected."""
        server = socket.create_server(("127.0.0.1", 0))
        try:
            handler = logging.handlers.SysLogHandler(
                server.getsockname(), socktype=socket.SOCK_STREAM
            )
            logger.addHandler(handler)
            [hazard] = found("socket", logger.name)
            assert hazard.where.startswith("SysLogHandler(")
            assert "none yet" not in hazard.detail
        finally:
            server.close()

    def test_datagram_handlers_are_no_hazard(self, logger: logging.Logger) -> None:
        """Datagrams do not interleave: UDP handlers are not listed."""
        logger.addHandler(logging.handlers.DatagramHandler("127.0.0.1", 9))
        logger.addHandler(logging.handlers.SysLogHandler(("127.0.0.1", 9)))
        assert found("socket", logger.name) == []


class TestThreads:
    def test_other_thread(self) -> None:
        """Another thread is listed by name, with where it is; not once it has ended."""
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait, name="doctor-test-worker")
        thread.start()
        try:
            [hazard] = found("thread", "'doctor-test-worker'")
            assert "(daemon)" not in hazard.where
            assert "it was in wait()" in hazard.detail
            assert not hazard.covered
        finally:
            stop.set()
            thread.join(10)
        assert found("thread", "'doctor-test-worker'") == []

    def test_calling_thread_is_the_forking_one(self) -> None:
        """The thread that calls diagnose() stands for the one that forks: not listed."""
        results: List[List[str]] = []
        thread = threading.Thread(
            target=lambda: results.append([h.where for h in found("thread", "")]),
            name="doctor-test-caller",
            daemon=True,
        )
        thread.start()
        thread.join(10)
        [wheres] = results
        assert "thread 'MainThread'" in wheres
        assert "thread 'doctor-test-caller' (daemon)" not in wheres


class TestStructlog:
    @pytest.fixture(params=["structlog._output", "structlog._loggers"])
    def fake_structlog(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> Dict[Any, Any]:
        """structlog's lock table, as new (``_output``) and old (``_loggers``) versions keep it."""
        module = types.ModuleType(request.param)
        locks: Any = weakref.WeakKeyDictionary() if request.param.endswith("_output") else {}
        module.WRITE_LOCKS = locks  # type: ignore[attr-defined]
        # Only this one, even where the real structlog is imported too.
        for name in ("structlog._output", "structlog._loggers"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.setitem(sys.modules, request.param, module)
        return locks

    def test_write_locks_listed(self, fake_structlog: Dict[Any, Any]) -> None:
        """Each of structlog's write locks is listed; install() covers it in every mode."""
        stream = io.StringIO()
        stream.name = "<doctor-test-stream>"  # type: ignore[misc]
        fake_structlog[stream] = threading.Lock()
        for mode in ("forward", "inherit"):
            [hazard] = found("structlog-lock", "<doctor-test-stream>", mode)
            assert hazard.where == "structlog's write lock for <doctor-test-stream>"
            assert "the child re-initializes it" in hazard.remedy
            assert hazard.covered

    def test_structlog_never_imported(self) -> None:
        """diagnose() does not import structlog, and lists nothing of it when it is not imported."""
        script = (
            "import sys, forksafe_logging\n"
            "kinds = [h.kind for h in forksafe_logging.diagnose().hazards]\n"
            "assert 'structlog-lock' not in kinds, kinds\n"
            "assert not any(m.startswith('structlog') for m in sys.modules)\n"
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=30, env=_env())


class TestModes:
    def test_modes_change_the_remedy(self, logger: logging.Logger) -> None:
        """The remedy is the one of the mode asked for; forwarding never uses the handler."""
        logger.addHandler(logging.handlers.MemoryHandler(10))
        [forward] = found("buffer", logger.name, "forward")
        [reset] = found("buffer", logger.name, "reset")
        assert "never uses it" in forward.remedy
        assert "applies its config" in reset.remedy

    def test_mode_in_force(self) -> None:
        """Without an argument, the mode in force is described, and install() shows as active."""
        assert not diagnose().installed
        assert diagnose().mode == "forward"
        forksafe_logging.install(child="inherit", fork_timeout=0.25)
        report = diagnose()
        assert (report.installed, report.mode, report.fork_timeout) == (True, "inherit", 0.25)
        assert 'install() is active (child="inherit", fork_timeout=0.25)' in str(report)

    def test_unknown_mode(self) -> None:
        """A mode that does not exist is refused, as install() refuses it."""
        with pytest.raises(ValueError, match="child must be one of"):
            diagnose("fowrard")

    def test_own_listener_thread(self) -> None:
        """With install() (forward), the library's own listener thread is listed as covered."""
        forksafe_logging.install()
        [hazard] = found("thread", "'forksafe_logging listener'")
        assert hazard.covered


def test_report_changes_nothing(logger: logging.Logger, tmp_path: Path) -> None:
    """diagnose() returns while other threads hold every lock it reports, and changes no state."""
    q: queue.Queue[Any] = queue.Queue()
    listener = logging.handlers.QueueListener(q, logging.NullHandler())
    listener.start()

    class Custom(logging.FileHandler):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.extra = threading.Lock()

    custom = Custom(str(tmp_path / "a.log"))
    memory = logging.handlers.MemoryHandler(100)
    sock = logging.handlers.SocketHandler("127.0.0.1", 9)
    for handler in (logging.handlers.QueueHandler(q), custom, memory, sock):
        logger.addHandler(handler)
    logger.propagate = False
    logger.warning("buffered, and queued")
    locks = [q.mutex, custom.lock, custom.extra, logging._lock]  # type: ignore[attr-defined]
    # A handler left as garbage by an earlier test, collected while another
    # thread holds logging's lock, blocks whichever thread the collector runs
    # in (its weakref callback takes that lock): not diagnose()'s doing, and
    # it made this test wait for the holder's own 30 s limit in a full run.
    gc.collect()
    gc.disable()
    holders: List[Holder] = []
    try:
        holders += [Holder(lock) for lock in locks]
        state = _state(q, memory, sock)
        reports: List[forksafe_logging.Diagnosis] = []
        caller = threading.Thread(target=lambda: reports.append(diagnose()), daemon=True)
        caller.start()
        # Shorter than a Holder keeps its lock (30 s), so a blocked diagnose()
        # fails here; a busy machine only slows it.
        caller.join(20)
        assert reports, "diagnose() blocked on a lock that another thread holds"
        [report] = reports
        after = _state(q, memory, sock)
        # Threads left by earlier tests may end meanwhile; diagnose() must only not start any.
        assert set(after.pop("threads")) <= set(state.pop("threads"))
        assert after == state
        kinds = {
            h.kind for h in report.hazards if logger.name in h.where or "QueueListener" in h.where
        }
        assert kinds >= {"queue", "listener-thread", "handler-lock", "stream", "buffer", "socket"}
    finally:
        for holder in holders:
            holder.release()
        gc.enable()
        listener.stop()


def _state(q: Any, memory: Any, sock: Any) -> Dict[str, Any]:
    return {
        "threads": sorted(t.ident or 0 for t in threading.enumerate()),
        "queued": len(q.queue),
        "buffered": list(memory.buffer),
        "socket": sock.sock,
        "modules": len(sys.modules),
    }


def test_to_dict_is_json() -> None:
    """The report's dictionary is plain data, and holds the summary."""
    data = json.loads(json.dumps(diagnose().to_dict()))
    assert set(data) >= {"hazards", "installed", "mode", "summary"}


START_METHOD = """
    import json, multiprocessing, subprocess, sys
    from forksafe_logging import diagnose
    from scenario_lib import report

    if sys.argv[2] != "default":
        multiprocessing.set_start_method(sys.argv[2])
    found = diagnose(child=sys.argv[3])
    # What multiprocessing itself picks, asked in another interpreter (asking
    # here would fix the choice).
    picked = subprocess.run(
        [sys.executable, "-c", "import multiprocessing; print(multiprocessing.get_start_method())"],
        capture_output=True, text=True, check=True).stdout.strip()
    if sys.argv[2] == "default":
        multiprocessing.set_start_method("spawn")  # still free to choose: the report fixed nothing
    report(method=found.start_method, default=found.start_method_is_default, picked=picked,
           text=str(found))
"""


class TestStartMethod:
    @pytest.mark.parametrize("mode", ["inherit", "reset"])
    def test_names_a_start_method_that_does_not_fork(self, scenario: Scenario, mode: str) -> None:
        """In inherit and reset modes the report says that non-forked children get nothing."""
        facts = scenario.run(START_METHOD, args=["forkserver", mode]).facts
        assert (facts["method"], facts["default"]) == ("forkserver", False)
        text = " ".join(facts["text"].split())
        assert 'multiprocessing starts its children with "forkserver" here: they are not' in text
        assert 'install(child="%s") does nothing for them' % mode in text

    def test_default_is_this_pythons_and_left_unfixed(self, scenario: Scenario) -> None:
        """The default is multiprocessing's own here, and the program may still choose."""
        facts = scenario.run(START_METHOD, args=["default", "inherit"]).facts
        assert facts["method"] == facts["picked"]
        assert facts["default"] is True
        named = "this Python's default" in " ".join(facts["text"].split())
        assert named is (facts["picked"] != "fork")

    def test_silent_where_it_does_not_matter(self, scenario: Scenario) -> None:
        """Fork children get the hooks: no line."""
        facts = scenario.run(START_METHOD, args=["fork", "inherit"]).facts
        assert "multiprocessing starts its children" not in facts["text"]

    def test_forward_not_installed_says_children_lose_records(self, scenario: Scenario) -> None:
        """Forward mode would cover a forkserver child, but install() is not active yet."""
        facts = scenario.run(START_METHOD, args=["forkserver", "forward"]).facts
        text = " ".join(facts["text"].split())
        assert "what they log does not reach its handlers unless they configure logging" in text
        assert "install() sends it there" in text


# -- the run-time warning ------------------------------------------------------

HELD = """
    import logging, logging.handlers, os, queue, sys, threading, warnings
    from scenario_lib import child, report
    import forksafe_logging

    mode, warn, which = sys.argv[2:5]
    forksafe_logging.install(child=mode, warn_held_locks=warn == "on")

    class Custom(logging.Handler):
        def __init__(self):
            super().__init__()
            self.extra = threading.Lock()

        def emit(self, record):
            pass

    q = queue.Queue()
    handler = logging.handlers.QueueHandler(q)
    logging.getLogger().addHandler(handler)
    custom = Custom()
    logging.getLogger("other").addHandler(custom)
    taken, release = threading.Event(), threading.Event()

    def hold():  # this script's code, as Custom's is
        with {"handler": handler.lock, "mutex": q.mutex, "extra": custom.extra}[which]:
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold, name="the-holder", daemon=True)
    holder.start()
    taken.wait(10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = child(lambda: logging.getLogger().warning("from the child"), timeout=5)
    release.set()
    holder.join(10)
    held = [w for w in caught if issubclass(w.category, forksafe_logging.HeldLockWarning)]
    report(
        child=outcome,
        messages=[str(w.message) for w in held],
        files=[os.path.basename(w.filename) for w in held],
    )
"""


class TestHeldLockWarning:
    @pytest.mark.parametrize("mode", ["inherit", "forward"])
    def test_names_the_holder(self, scenario: Scenario, mode: str) -> None:
        """A fork while a thread holds a handler's lock warns, naming the lock and the thread."""
        facts = scenario.run(HELD, args=[mode, "on", "handler"]).facts
        assert facts["child"] == "ok"
        [message] = facts["messages"]
        assert (
            "- the lock of QueueHandler on the root logger, held by thread 'the-holder'" in message
        )
        # Attributed to the line that forked, not to the hook.
        assert facts["files"] == ["scenario_lib.py"]

    def test_off_by_default(self, scenario: Scenario) -> None:
        """Without warn_held_locks, the same fork warns nothing (control)."""
        facts = scenario.run(HELD, args=["inherit", "off", "handler"]).facts
        assert (facts["child"], facts["messages"]) == ("ok", [])

    def test_plain_lock(self, scenario: Scenario) -> None:
        """A plain lock does not record its holder: the threads in the code taking it are named."""
        facts = scenario.run(HELD, args=["reset", "on", "extra"]).facts
        [message] = facts["messages"]
        assert (
            "- the lock 'extra' of __main__.Custom on logger 'other', held by a thread" in message
        )
        assert "in its code then: thread 'the-holder'" in message

    def test_queue_mutex(self, scenario: Scenario) -> None:
        """A queue's mutex held at the fork is reported, and the child still logs."""
        facts = scenario.run(HELD, args=["inherit", "on", "mutex"]).facts
        assert facts["child"] == "ok"
        [message] = facts["messages"]
        assert "- the mutex of queue.Queue behind QueueHandler on the root logger" in message

    def test_option_checked(self) -> None:
        """warn_held_locks must be a bool."""
        with pytest.raises(TypeError, match="warn_held_locks must be True or False"):
            forksafe_logging.install(warn_held_locks="yes")  # type: ignore[arg-type]


# -- the command line ---------------------------------------------------------

CLI_TIMEOUT = 30


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_HOME)
    return env


def doctor(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m forksafe_logging doctor ARGS`` in ``cwd``, under a timeout."""
    cmd = [sys.executable, "-m", "forksafe_logging", "doctor", *args]
    outcome = run_in_own_group(cmd, cwd=cwd, env=_env(), timeout=CLI_TIMEOUT)
    assert not outcome.hung, "the doctor did not finish within %s s:\n%s" % (
        CLI_TIMEOUT,
        outcome.stderr,
    )
    return subprocess.CompletedProcess(cmd, outcome.returncode, outcome.stdout, outcome.stderr)


POOL_SCRIPT = """
    import logging, logging.handlers, multiprocessing, pathlib, sys

    def task(n):
        pathlib.Path("child-ran").touch()

    def main():
        print("the script's own output")
        logging.basicConfig(filename=sys.argv[1])
        logging.getLogger().addHandler(logging.handlers.MemoryHandler(10))
        with multiprocessing.get_context("fork").Pool(2) as pool:
            pool.map(task, range(2))
        pathlib.Path("after-pool").touch()

    if __name__ == "__main__":
        main()
"""


class TestCommand:
    def test_script_stopped_at_first_fork(self, tmp_path: Path) -> None:
        """A script runs as __main__, with its arguments, and stops where it would fork."""
        (tmp_path / "app.py").write_text(textwrap.dedent(POOL_SCRIPT))
        proc = doctor(tmp_path, "--json", "--script", "app.py", "--", "out.log")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)  # only the report: the script's output went to stderr
        assert "the script's own output" in proc.stderr
        assert "Process.start(), called by main() in app.py" in report["moment"]
        wheres = {h["kind"]: h["where"] for h in report["hazards"]}
        assert "FileHandler(%r)" % str(tmp_path / "out.log") in wheres["stream"]
        assert "MemoryHandler" in wheres["buffer"]
        assert not (tmp_path / "child-ran").exists()
        assert not (tmp_path / "after-pool").exists()

    def test_script_os_fork(self, tmp_path: Path) -> None:
        """os.fork() itself is where a script stops; the text report says so."""
        (tmp_path / "app.py").write_text(
            "import logging, os\nlogging.basicConfig()\nif os.fork() == 0:\n    open('x', 'w')\n"
        )
        proc = doctor(tmp_path, "--script", "app.py")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("Stopped the script at its first fork: os.fork(), called by")
        assert "[stream] StreamHandler(<stderr>) on the root logger" in proc.stdout
        assert not (tmp_path / "x").exists()

    def test_module(self, tmp_path: Path) -> None:
        """A module is imported from the current directory, and its set-up is reported."""
        (tmp_path / "setup_mod.py").write_text(
            "import logging, logging.handlers\n"
            "logging.getLogger('mod').addHandler(logging.handlers.MemoryHandler(5))\n"
        )
        proc = doctor(tmp_path, "--json", "--child", "inherit", "--module", "setup_mod")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["moment"].startswith("Imported module setup_mod")
        assert report["mode"] == "inherit"
        [buffer] = [h for h in report["hazards"] if h["kind"] == "buffer"]
        assert buffer["where"] == "MemoryHandler(capacity=5) on logger 'mod'"

    def test_article(self, tmp_path: Path) -> None:
        """The article's program: its queue, listener, file and logging thread at the first fork."""
        proc = doctor(tmp_path, "--json", "--article")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert "Process.start(), called by run() in _article.py" in report["moment"]
        kinds = [h["kind"] for h in report["hazards"]]
        assert kinds == ["queue", "listener-thread", "stream", "thread"]
        [spam] = [h for h in report["hazards"] if h["kind"] == "thread"]
        assert "_spam()" in spam["detail"]
        assert report["summary"].endswith('install(child="forward") covers 3, not: thread.')

    def test_no_alarm_without_another_thread(self, tmp_path: Path) -> None:
        """A bare basicConfig() and one thread: nothing a fork now copies unsafely.

        The stream's hazard needs a thread writing at the fork: it is listed
        apart, as latent, and the advice names the line of the first fork.
        """
        script = "import logging, os\nlogging.basicConfig()\nos.fork()\n"
        (tmp_path / "app.py").write_text(script)
        proc = doctor(tmp_path, "--script", "app.py")
        assert proc.returncode == 0, proc.stderr
        assert "No fork hazard at this moment: no other thread runs." in proc.stdout
        assert "fork hazard;" not in proc.stdout
        assert "fork hazards;" not in proc.stdout
        assert "Only if another thread used logging during a fork" in proc.stdout
        fork_line = script.splitlines().index("os.fork()") + 1
        assert "add these two lines before app.py, line %d (the first fork)" % fork_line in (
            proc.stdout.replace("\n", " ")
        )
        assert proc.stdout.rstrip().endswith(
            "import forksafe_logging\n    forksafe_logging.install()"
        )
        report = json.loads(doctor(tmp_path, "--json", "--script", "app.py").stdout)
        [stream] = report["hazards"]
        assert stream["needs_thread"] is True
        assert "forksafe_logging.install()" in report["advice"]

    def test_thread_makes_the_same_stream_a_hazard(self, tmp_path: Path) -> None:
        """The same configuration with another thread running: the stream is a hazard now."""
        (tmp_path / "app.py").write_text(
            "import logging, os, threading\nlogging.basicConfig()\n"
            "threading.Thread(target=threading.Event().wait, daemon=True).start()\nos.fork()\n"
        )
        report = json.loads(doctor(tmp_path, "--json", "--script", "app.py").stdout)
        assert [h["kind"] for h in report["hazards"]] == ["stream", "thread"]
        assert (
            report["summary"] == '2 fork hazards; install(child="forward") covers 1, not: thread.'
        )
        assert "to cover the hazards above" in " ".join(report["advice"].split())

    def test_advice_once_installed(self, tmp_path: Path) -> None:
        """With install() active and everything covered, nothing to do."""
        (tmp_path / "app.py").write_text(
            "import logging, os, forksafe_logging\nlogging.basicConfig()\n"
            "forksafe_logging.install()\nos.fork()\n"
        )
        proc = doctor(tmp_path, "--script", "app.py")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.rstrip().endswith(
            "What to do: nothing; install() is active and covers what is listed."
        )

    def test_children_not_forked_need_install(self, tmp_path: Path) -> None:
        """No hazard at all, but spawn children: their records would not reach the handlers."""
        (tmp_path / "app.py").write_text(
            "import logging, multiprocessing\n"
            "if __name__ == '__main__':\n"
            "    multiprocessing.set_start_method('spawn')\n"
            "    logging.getLogger().addHandler(logging.NullHandler())\n"
            "    multiprocessing.Process(target=print).start()\n"
        )
        report = json.loads(doctor(tmp_path, "--json", "--script", "app.py").stdout)
        assert report["hazards"] == []
        assert report["summary"] == "No fork hazards found."
        assert "before app.py, line 5 (the first fork)" in report["advice"]
        assert "children started with spawn" in report["advice"]

    def test_never_forks(self, tmp_path: Path) -> None:
        """A script that neither forks nor ends is reported on at the timeout."""
        (tmp_path / "serve.py").write_text(
            "import logging, threading\nlogging.basicConfig()\nthreading.Event().wait()\n"
        )
        proc = doctor(tmp_path, "--script", "serve.py", "--timeout", "0.5")
        assert proc.returncode == 0, proc.stderr
        assert "neither forked nor ended after 0.5 s" in proc.stdout
        assert "StreamHandler(<stderr>)" in proc.stdout

    @pytest.mark.parametrize(
        ("files", "args", "status", "message"),
        [
            ({}, ["--script", "missing.py"], 2, "--script missing.py: no such file"),
            ({}, ["--module", "no_such_module"], 2, "no module named 'no_such_module'"),
            ({}, ["--module", "m", "extra"], 2, "arguments after the options are for --script"),
            ({}, [], 2, "one of the arguments --script --module --article is required"),
            ({"bad.py": "import no_such_dependency\n"}, ["--module", "bad"], 1,
             "importing module bad raised an exception"),
            ({"boom.py": "1 / 0\n"}, ["--script", "boom.py"], 1, "ZeroDivisionError"),
            ({"quit.py": "raise SystemExit(3)\n"}, ["--script", "quit.py"], 1,
             "the script exited with status 3 before its first fork"),
        ],
        ids=["missing-script", "missing-module", "args-without-script", "no-target",
             "module-raises", "script-raises", "script-exits"],
    )  # fmt: skip
    def test_errors(
        self, tmp_path: Path, files: Dict[str, str], args: List[str], status: int, message: str
    ) -> None:
        """Misuse and failing targets: a clear message on stderr, a status, and no report."""
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        proc = doctor(tmp_path, *args)
        assert proc.returncode == status
        assert message in proc.stderr
        assert proc.stdout == ""


def _diagnosis(hazards: List[Hazard], **fields: Any) -> forksafe_logging.Diagnosis:
    base: Dict[str, Any] = {
        "installed": False, "mode": "forward", "fork_timeout": 0.1, "pid": 1, "python": "3.x",
        "start_method": "fork", "start_method_is_default": True,
    }  # fmt: skip
    base.update(fields)
    return forksafe_logging.Diagnosis(hazards=tuple(hazards), **base)


class TestAdvice:
    """The report's last word, for each case (built directly: the cases are rare to stage)."""

    THREAD = Hazard("thread", "thread 'x'", "detail", "remedy", False)
    BUFFER = Hazard("buffer", "MemoryHandler", "detail", "remedy", True)
    STREAM = Hazard("stream", "StreamHandler", "detail", "remedy", True, needs_thread=True)

    def test_only_what_install_does_not_cover(self) -> None:
        """Nothing install() covers: no lines to add, the entries to read."""
        advice = " ".join(_diagnosis([self.THREAD]).advice().split())
        assert advice.startswith("What to do: install() does not cover what is listed")
        assert "import forksafe_logging" not in advice

    def test_inherit_mode_and_spawn_children(self) -> None:
        """inherit/reset give spawn children nothing: the advice is forward mode."""
        advice = _diagnosis([], mode="inherit", start_method="spawn").advice("app.py, line 3")
        assert "before app.py, line 3 (the first fork)" in " ".join(advice.split())
        assert advice.rstrip().endswith("    forksafe_logging.install()")
        installed = _diagnosis([], installed=True, mode="reset", start_method="forkserver")
        assert 'install(child="forward") sends what they log' in " ".join(
            installed.advice().split()
        )

    def test_installed_with_nothing_listed(self) -> None:
        assert (
            _diagnosis([], installed=True).advice() == "What to do: nothing; install() is active."
        )

    def test_present_and_latent_mixed(self) -> None:
        """A buffer is a hazard without any thread; the stream, latent, is listed after it."""
        found = _diagnosis([self.BUFFER, self.STREAM])
        assert found.latent == (self.STREAM,)
        assert found.summary == (
            '1 fork hazard; install(child="forward") covers it; '
            "1 more only if another thread used logging during a fork."
        )
        text = str(found)
        assert (
            text.index("[buffer]") < text.index("Only if another thread") < text.index("[stream]")
        )
        assert "to cover the hazards above" in " ".join(found.advice().split())
