"""End to end: a real gunicorn, whose master writes every worker's records.

gunicorn runs the recipe's configuration (docs/recipes/gunicorn.conf.py),
with a few additions the checks need, and serves a WSGI app that logs one
record per request. The test sends a few thousand requests, stops the server
with SIGTERM, and reads the master's log file: every request's record is in
it exactly once, written by the master (each line starts with the pid of the
process that wrote it) for the worker that served the request.
"""

from __future__ import annotations

import collections
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Set, Tuple

import pytest
from conftest import PACKAGE_HOME, TESTS

pytestmark = pytest.mark.timeout(150)

RECIPE = TESTS.parent / "docs" / "recipes" / "gunicorn.conf.py"
#: Requests per run, and the client threads that send them.
REQUESTS = 2000
CLIENTS = 4
#: How long gunicorn may take to stop, and its workers to finish after SIGTERM.
STOP_TIMEOUT = 40
GRACEFUL_TIMEOUT = 5
#: How long the requests of one run may take, at most (about 1 s here).
LOAD_TIMEOUT = 60

APP = """\
import logging
import os

log = logging.getLogger("app")


def app(environ, start_response):
    request_id = environ["PATH_INFO"].rpartition("/")[2]
    # WARNING, so that the record passes whatever level gunicorn's loggers have.
    log.warning("request %s", request_id)
    body = b"%d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

#: Put first in the application module to call install() there: with
#: --preload the master imports it, before it forks the workers.
APP_INSTALL = """\
import forksafe_logging

forksafe_logging.install()
"""

#: The recipe, then what the checks need. Read by gunicorn in the master,
#: at start and again on each HUP.
CONFIG = '''\
import io
import logging
import os
import threading
import time

exec(compile(open({recipe!r}).read(), {recipe!r}, "exec"))

INSTALL = {install!r}
TICKER = {ticker!r}
SLOW_FILE = {slow_file!r}


class WriterFormatter(logging.Formatter):
    """Starts each line with the pid of the process that writes it."""

    def format(self, record):
        record.writer = os.getpid()
        return super().format(record)


logconfig_dict["formatters"]["line"] = {{
    "()": WriterFormatter,
    "fmt": "%(writer)d %(process)d %(name)s %(message)s",
}}
logconfig_dict["loggers"]["gunicorn.error"]["level"] = {error_level!r}


class SlowFile(io.FileIO):
    """A file on a slow disk: each write takes 0.1 ms more.

    The buffer above it holds its lock meanwhile, so the ticker holds the
    lock most of the time, as a thread writing to a slow pipe would.
    """

    def write(self, data):
        time.sleep(0.0001)
        return super().write(data)


class SlowFileHandler(logging.FileHandler):
    def _open(self):
        raw = SlowFile(self.baseFilename, "a")
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding=self.encoding or "utf-8")


if SLOW_FILE:
    file_handler = logconfig_dict["handlers"]["file"]
    file_handler["()"] = SlowFileHandler
    del file_handler["class"]
# gunicorn 25+ runs a control socket in the master: one per test directory.
control_socket = os.path.abspath("gunicorn.ctl")

recipe_on_starting = on_starting
stop_ticking = threading.Event()
tickers = []


def on_starting(server):
    if INSTALL:
        recipe_on_starting(server)
    if TICKER:
        ticker = threading.Thread(target=tick, name="ticker", daemon=True)
        ticker.start()
        tickers.append(ticker)


def tick():
    # What hung gunicorn's workers in #3529: a thread of the master that
    # writes, all the time, to a file the workers write to as well.
    log = logging.getLogger("ticker")
    n = 0
    while not stop_ticking.is_set():
        n += 1
        log.info("tick %d", n)


def on_exit(server):
    stop_ticking.set()
    for ticker in tickers:
        ticker.join(10)


def note(name, pid):
    # Not through logging, which is what is under test.
    fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"%d\\n" % pid)
    finally:
        os.close(fd)


def post_worker_init(worker):
    note("booted", os.getpid())


def child_exit(server, worker):
    note("exited", worker.pid)
'''


@dataclass(frozen=True)
class Variant:
    worker_class: str = "sync"
    workers: int = 3
    preload: bool = False
    #: A thread of the master logging in a tight loop (gunicorn #3529).
    ticker: bool = False
    #: SIGHUP to the master once a third of the requests are answered.
    hup: bool = False
    #: gunicorn's --max-requests (with a jitter of a fifth of it).
    max_requests: int = 0
    #: The level of gunicorn's own logger, ``gunicorn.error``.
    error_level: str = "INFO"
    #: Each write to the log file takes 0.1 ms more, as on a slow disk.
    slow_file: bool = False
    #: Where install() is called: the recipe's ``on_starting`` hook
    #: (``"config"``), or the application module (``"app"``, with --preload).
    install_in: str = "config"


VARIANTS = {
    "sync": Variant(),
    "sync-preload": Variant(preload=True),
    "sync-preload-install-in-app": Variant(preload=True, install_in="app"),
    "gevent": Variant("gevent", workers=2),
    "gevent-preload": Variant("gevent", workers=2, preload=True),
    "sync-hup": Variant(workers=2, hup=True),
    # At WARNING, a gevent worker's first record comes after gevent has
    # monkey-patched the worker, from one of many greenlets.
    "gevent-hup-warning": Variant(
        "gevent", workers=2, hup=True, error_level="WARNING", ticker=True
    ),
    "sync-max-requests": Variant(max_requests=100),
    # The control below, with install().
    "sync-ticker-max-requests": Variant(ticker=True, slow_file=True, max_requests=100),
}

_unavailable: Dict[str, Optional[str]] = {}


def require(worker_class: str) -> None:
    """Skip, saying why, unless gunicorn and this worker class can start here."""
    if worker_class not in _unavailable:
        # In a subprocess: importing gevent here would register its at-fork
        # hooks in the test process, which forks in other tests.
        module = {"sync": "gunicorn.workers.sync", "gevent": "gunicorn.workers.ggevent"}
        try:
            probe = subprocess.run(
                [sys.executable, "-c", "import " + module[worker_class]],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            lines = probe.stderr.strip().splitlines() or ["exit %d" % probe.returncode]
            _unavailable[worker_class] = None if probe.returncode == 0 else lines[-1]
        except subprocess.TimeoutExpired:
            _unavailable[worker_class] = "importing it took over 60 s"
    reason = _unavailable[worker_class]
    if reason is not None:
        pytest.skip(
            "gunicorn's %s worker cannot be imported here (%s); pip install '.[e2e]'"
            % (worker_class, reason)
        )


class Server:
    """A gunicorn master started with the test configuration in ``directory``."""

    def __init__(self, directory: Path, variant: Variant, *, install: bool = True) -> None:
        self.directory = directory
        in_app = install and variant.install_in == "app"
        (directory / "e2e_app.py").write_text((APP_INSTALL if in_app else "") + APP)
        (directory / "e2e.conf.py").write_text(
            CONFIG.format(
                recipe=str(RECIPE),
                install=install and not in_app,
                ticker=variant.ticker,
                slow_file=variant.slow_file,
                error_level=variant.error_level,
            )
        )
        # The test binds the socket and gunicorn takes it over (fd://):
        # no free port to guess, and no other program can take it meanwhile.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            fd = listener.fileno()
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                "--config=e2e.conf.py",
                "--bind=fd://%d" % fd,
                "--worker-class=" + variant.worker_class,
                "--workers=%d" % variant.workers,
                "--graceful-timeout=%d" % GRACEFUL_TIMEOUT,
            ]
            if variant.preload:
                command.append("--preload")
            if variant.max_requests:
                command += [
                    "--max-requests=%d" % variant.max_requests,
                    "--max-requests-jitter=%d" % (variant.max_requests // 5),
                ]
            command.append("e2e_app:app")
            env = dict(os.environ)
            env.pop("FORKSAFE_LOGGING_LISTENER", None)
            # The forksafe_logging this test run imported (the installed wheel
            # under make test), never the source tree by accident.
            env["PYTHONPATH"] = str(PACKAGE_HOME)
            with open(directory / "gunicorn.out", "wb") as output:
                self.process = subprocess.Popen(
                    command,
                    cwd=directory,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd,),
                    start_new_session=True,
                )
        finally:
            listener.close()  # gunicorn has its own copy now
        #: The master is the process started here (gunicorn does not daemonize).
        self.pid = self.process.pid

    def stop(self) -> int:
        """SIGTERM, gunicorn's graceful stop; its exit status.

        Fails as soon as a worker blocks on a lock on its way out.
        """
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            try:
                return self.process.wait(0.05)  # a polling interval
            except subprocess.TimeoutExpired:
                pass
            self.fail_if_stuck()
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("gunicorn did not stop within %d s of SIGTERM%s" % (STOP_TIMEOUT, self))

    def fail_if_stuck(self) -> None:
        stuck = sorted(pid for pid in self.workers() if blocked_on_a_lock(pid))
        if stuck:
            pytest.fail("workers %s are blocked on a lock%s" % (stuck, self))

    def settle(self, count: int) -> None:
        """Wait until ``count`` workers run, all booted.

        gunicorn loses a SIGTERM that reaches a worker before the worker has
        set its signal handlers (it still has the master's, which only queue
        the signal), and that worker then runs until the graceful timeout
        ends and it is killed. So no stopping while a replacement boots.
        """

        def settled() -> bool:
            workers = self.workers()
            return len(workers) == count and workers <= set(self.pids("booted"))

        wait_for(settled, 60, "%d workers up%s" % (count, self))

    def kill(self) -> None:
        """Whatever is left of the server's process group, killed."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(STOP_TIMEOUT)

    def pids(self, name: str) -> List[int]:
        """The pids noted in the file ``booted`` or ``exited``."""
        try:
            text = (self.directory / name).read_text()
        except FileNotFoundError:
            return []
        return [int(word) for word in text.split()]

    def workers(self) -> Set[int]:
        """The master's children alive now."""
        children: Set[int] = set()
        try:
            for task in os.listdir("/proc/%d/task" % self.pid):
                with open("/proc/%d/task/%s/children" % (self.pid, task)) as f:
                    children.update(int(word) for word in f.read().split())
        except OSError:  # the master or one of its threads just ended
            pass
        return children

    def __str__(self) -> str:
        try:
            output = (self.directory / "gunicorn.out").read_text(errors="replace")
        except OSError:
            output = ""
        return "; gunicorn's output:\n" + output[-4000:]


def blocked_on_a_lock(pid: int) -> bool:
    """Whether ``pid`` is a single-threaded process asleep on a futex.

    Such a process waits for a lock that no thread of its own will ever
    release: a lock copied held by ``fork()``.
    """
    try:
        with open("/proc/%d/status" % pid) as f:
            threads = [line.split()[1] for line in f if line.startswith("Threads:")]
        with open("/proc/%d/wchan" % pid) as f:
            wchan = f.read()
    except OSError:
        return False
    return threads == ["1"] and "futex" in wchan


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("%s: not within %s s" % (what, timeout))
        time.sleep(0.02)  # a polling interval; the condition is the signal


class Load:
    """Client threads that send ``count`` requests, one connection each."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.ids = ["r%d" % i for i in range(count)]
        #: Request id -> pid of the worker that answered.
        self.served: Dict[str, int] = {}
        self.errors: List[str] = []
        self._third_done = threading.Event()
        self._lock = threading.Lock()

    def run(self, server: Server, during: Optional[Callable[[], None]] = None) -> None:
        """Send every request; ``during`` runs once a third are answered.

        Fails as soon as a worker blocks on a lock, or gunicorn exits, rather
        than when the requests time out.
        """
        threads = [
            threading.Thread(target=self._client, args=(self.ids[k::CLIENTS],), daemon=True)
            for k in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + LOAD_TIMEOUT
        while any(thread.is_alive() for thread in threads):
            if during is not None and self._third_done.is_set():
                during()
                during = None
            server.fail_if_stuck()
            if server.process.poll() is not None:
                pytest.fail("gunicorn exited during the load%s" % server)
            if time.monotonic() > deadline:
                pytest.fail("%d s and the requests are not all answered%s" % (LOAD_TIMEOUT, server))
            for thread in threads:
                if thread.is_alive():
                    # A polling interval: the threads' ends are the signal.
                    thread.join(0.05)
                    break
        assert during is None, "a third of the requests were never answered: %s" % self.errors[:5]

    def _client(self, ids: List[str]) -> None:
        for request_id in ids:
            try:
                pid = self._get(request_id)
            except Exception as exc:
                with self._lock:
                    self.errors.append("%s: %r" % (request_id, exc))
                continue
            with self._lock:
                self.served[request_id] = pid
                if len(self.served) >= len(self.ids) // 3:
                    self._third_done.set()

    def _get(self, request_id: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=LOAD_TIMEOUT)
        try:
            connection.request("GET", "/r/" + request_id, headers={"Connection": "close"})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError("HTTP %d: %r" % (response.status, body[:200]))
            return int(body)
        finally:
            connection.close()


class Line(NamedTuple):
    writer: int
    origin: int
    name: str
    message: str


def read_log(path: Path) -> Tuple[List[Line], List[str]]:
    """The parsed lines of the master's log file, and those that do not parse."""
    lines: List[Line] = []
    junk: List[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for text in f.read().splitlines():
            parts = text.split(" ", 3)
            try:
                lines.append(Line(int(parts[0]), int(parts[1]), parts[2], parts[3]))
            except (ValueError, IndexError):
                junk.append(text)
    return lines, junk


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_record_once_by_the_master(tmp_path: Path, name: str) -> None:
    """Every request's record is in the master's file once, written by the master."""
    variant = VARIANTS[name]
    require(variant.worker_class)
    server = Server(tmp_path, variant)
    try:
        load = Load(server.port, REQUESTS)
        # No wait for the workers: the socket listens already, and requests
        # queue until a worker accepts them.
        load.run(server, (lambda: os.kill(server.pid, signal.SIGHUP)) if variant.hup else None)
        if variant.hup:
            # Old workers leave after their last request, new ones took over.
            wait_for(
                lambda: len(server.pids("booted")) >= 2 * variant.workers,
                60,
                "the workers of the HUP booting",
            )
        server.settle(variant.workers)
        status = server.stop()
    finally:
        server.kill()
    assert status == 0, "gunicorn exited with %d%s" % (status, server)
    assert load.errors == [], "%d requests failed: %s%s" % (
        len(load.errors),
        load.errors[:5],
        server,
    )
    assert len(load.served) == REQUESTS

    booted, exited = server.pids("booted"), server.pids("exited")
    # Every worker the master reaped had booted: none hung at "Booting
    # worker" (#3529). (One that booted may have ended after the master, when
    # gunicorn lost its SIGTERM: see Server.settle.)
    assert set(exited) <= set(booted), "reaped %s, booted %s%s" % (
        sorted(exited),
        sorted(booted),
        server,
    )
    assert len(exited) >= len(booted) - variant.workers
    assert set(load.served.values()) <= set(booted)
    if variant.hup or variant.max_requests:
        assert len(booted) > variant.workers, "no worker was replaced"

    lines, junk = read_log(tmp_path / "app.log")
    assert junk == [], "lines that are not records, or records cut or run together: %s" % (
        junk[:5],
    )
    # Written by the master alone, whichever process logged.
    writers = collections.Counter(line.writer for line in lines)
    assert set(writers) == {server.pid}, "lines written by %s, master %d" % (
        dict(writers),
        server.pid,
    )

    # Each request's record once, from the worker that served it.
    records = collections.defaultdict(list)
    for line in lines:
        if line.name == "app":
            assert line.message.startswith("request "), line
            records[line.message[len("request ") :]].append(line.origin)
    missing = [i for i in load.ids if i not in records]
    twice = {i: origins for i, origins in records.items() if len(origins) != 1}
    assert missing == [], "%d records missing: %s" % (len(missing), missing[:10])
    assert twice == {}, "records written more than once: %s" % (list(twice.items())[:10],)
    assert set(records) == set(load.ids)
    wrong = [(i, records[i][0], pid) for i, pid in load.served.items() if records[i][0] != pid]
    assert wrong == [], "records whose process is not the worker that answered: %s" % wrong[:5]
    assert server.pid not in set(load.served.values())

    # gunicorn's access log, logged in the worker after the response: once each.
    access = collections.Counter(
        line.message.split('"GET /r/', 1)[1].split(" ", 1)[0]
        for line in lines
        if line.name == "gunicorn.access"
    )
    assert access == collections.Counter(load.ids)

    if variant.error_level == "INFO":
        # gunicorn's own record in each worker, its first, logged right after the fork.
        booting = collections.Counter(
            line.origin
            for line in lines
            if line.name == "gunicorn.error" and line.message.startswith("Booting worker")
        )
        assert booting == collections.Counter(booted)

    if variant.ticker:
        # What the master's thread wrote, once each and whole: no worker wrote
        # out a copy of what the master had half-written at a fork.
        ticks = [int(line.message.split()[1]) for line in lines if line.name == "ticker"]
        assert ticks == list(range(1, len(ticks) + 1))
        # The master's records wait their turn behind the workers' (causal
        # order), so the ticker runs slower than it would alone: 713 records
        # in one CI run on 3.10, where > 1000 was usual before the order.
        assert len(ticks) > 300, "the ticker hardly ran: %d records" % len(ticks)


def test_control_without_install_workers_hang_booting(tmp_path: Path) -> None:
    """The positive control of the ticker variant: without install(), gunicorn #3529.

    A worker forked while the master's thread is inside the log file's
    ``write()`` inherits that stream's lock held, and blocks for ever on its
    first record, "Booting worker with pid". The file is slow (each write
    0.1 ms), so the thread is nearly always inside ``write()``: the first
    fork hangs (every time in 20 runs on each Python here). At full speed it
    took 1 to over 20 forks, on 3.9 most of all. Each fork is a new draw: the
    test adds workers (SIGTTIN) until one is stuck, at most ``max_forks``.
    """
    max_forks = 20
    require("sync")
    server = Server(tmp_path, Variant(workers=1, ticker=True, slow_file=True), install=False)
    try:
        forks = 1
        stuck: Set[int] = set()

        def settled() -> bool:
            """Every worker forked so far has booted or is stuck on a lock."""
            workers = server.workers()
            booted = set(server.pids("booted"))
            stuck.update(pid for pid in workers - booted if blocked_on_a_lock(pid))
            return len(workers) == forks and workers <= booted | stuck

        while True:
            wait_for(settled, 60, "%d workers booting or blocking" % forks)
            if stuck or forks == max_forks:
                break
            os.kill(server.pid, signal.SIGTTIN)  # gunicorn forks one more worker
            forks += 1
    finally:
        server.kill()
    assert stuck, "in %d forks under the logging thread, no worker blocked%s" % (forks, server)
    assert not stuck & set(server.pids("booted"))
