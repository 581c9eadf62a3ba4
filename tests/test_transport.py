"""The process tree end to end: each record once, in order, whatever the child does.

Under each start method.
"""

from __future__ import annotations

import sys

import pytest
from conftest import PRELUDE, START_METHODS, Scenario

pytestmark = pytest.mark.timeout(180)


class TestExactlyOnceInOrder:
    BODY = (
        PRELUDE
        + """
def work(n):
    log = logging.getLogger("worker")
    for i in range(10000):
        log.info("%d %d", n, i)

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    procs = [ctx.Process(target=work, args=(n,)) for n in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    seen = collections.defaultdict(list)
    for line in lines():
        _, name, message = line.split("|")
        n, i = map(int, message.split())
        seen[n].append(i)
    report(exitcodes=[p.exitcode for p in procs],
           in_order=[seen[n] == list(range(10000)) for n in range(8)],
           counts=[len(seen[n]) for n in range(8)])
"""
    )

    @START_METHODS
    def test_8_processes_10000_records(self, scenario: Scenario, method: str) -> None:
        """8 processes x 10,000 records: each handled once, in each process's order."""
        facts = scenario.run(self.BODY, None, args=[method], timeout=170).facts
        print("records per process:", facts["counts"])
        assert facts["exitcodes"] == [0] * 8
        assert facts["counts"] == [10000] * 8
        assert facts["in_order"] == [True] * 8


class TestKill:
    BODY = (
        PRELUDE
        + """
def work():
    log = logging.getLogger("victim")
    for i in range(2000):
        log.info("record %d", i)
    # Killed right after the last logging call returned.
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    configure()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(60)
    got = [line.split("|")[2] for line in lines()]
    expected = ["record %d" % i for i in range(2000)]
    report(exitcode=p.exitcode, got=len(got), complete=got == expected)
"""
    )

    @START_METHODS
    def test_nothing_lost_to_sigkill(self, scenario: Scenario, method: str) -> None:
        """Every record whose call returned arrives, though the process was SIGKILLed."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        assert facts == {"exitcode": -9, "got": 2000, "complete": True}

    KILLED_MID_SEND = (
        PRELUDE
        + """
import random, time

def big():
    log = logging.getLogger("big")
    while True:
        log.info("x" * (8 << 20))

def steady(n):
    for i in range(3000):
        logging.getLogger("steady").info("%d %d", n, i)

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    rng = random.Random(int(sys.argv[3]))
    others = [ctx.Process(target=steady, args=(n,)) for n in range(3)]
    for p in others:
        p.start()
    victims = []
    for _ in range(3):
        v = ctx.Process(target=big)
        v.start()
        victims.append(v)
        # A random point of its life, most likely in the middle of an 8 MB send.
        time.sleep(rng.uniform(0.05, 0.5))
        v.kill()
        v.join(30)
    for p in others:
        p.join(120)
    # The listener still serves: a process started now gets through.
    late = ctx.Process(target=steady, args=(9,))
    late.start()
    late.join(60)
    counts = collections.Counter(line.split("|")[2].split()[0] for line in lines()
                                 if line.split("|")[1] == "steady")
    stats = forksafe_logging.QueueListener().stats()
    report(counts=counts, exitcodes=[p.exitcode for p in others + [late]],
           truncated=stats["truncated"], garbage=stats["garbage"])
"""
    )

    @START_METHODS
    @pytest.mark.parametrize("seed", [1, 2])
    def test_killed_sender_harms_nobody(self, scenario: Scenario, method: str, seed: int) -> None:
        """Senders SIGKILLed mid-record: the others' records all arrive, the listener goes on."""
        facts = scenario.run(self.KILLED_MID_SEND, None, args=[method, str(seed)]).facts
        assert facts["exitcodes"] == [0, 0, 0, 0]
        assert facts["counts"] == {"0": 3000, "1": 3000, "2": 3000, "9": 3000}
        assert facts["garbage"] == 0
        print("half-sent records dropped:", facts["truncated"])


class TestNoDoubleWrites:
    SPAWN_MODULE_CONFIG = """
import logging, multiprocessing, sys
import forksafe_logging
# Runs again in every spawn child: it re-imports this module.
logging.basicConfig(filename="out.log", level=logging.INFO, format="%(processName)s %(message)s")

def work():
    logging.info("from the child")

if __name__ == "__main__":
    forksafe_logging.install()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work, name="child")
    p.start()
    p.join(60)
    logging.info("from the top")
    forksafe_logging.flush(10)
    with open("out.log") as f:
        print(__import__("json").dumps({"lines": f.read().splitlines()}))
"""

    @START_METHODS
    def test_module_level_config_in_child(self, scenario: Scenario, method: str) -> None:
        """A child re-running module-level basicConfig writes each record once, via the top."""
        facts = scenario.run(self.SPAWN_MODULE_CONFIG, None, args=[method]).facts
        assert sorted(facts["lines"]) == ["MainProcess from the top", "child from the child"]


class TestChildReconfigures:
    BODY = (
        PRELUDE
        + """
import logging.config

def work():
    # What gevent's monkey.patch_all() requires of every entry of the list of
    # handlers (gunicorn's gevent workers call it after the fork).
    lockless = [repr(ref()) for ref in logging._handlerList
                if ref() is not None and not hasattr(ref(), "lock")]
    # A worker that configures logging when it imports the application: its
    # later changes are its own, so its handler writes the record.
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"own": {"class": "logging.FileHandler", "filename": "child.log"}},
        "root": {"handlers": ["own"], "level": "INFO"},
    })
    logging.getLogger("c").info("after dictConfig")
    logging.shutdown()
    sys.exit(1 if lockless else 0)

if __name__ == "__main__":
    configure()
    p = multiprocessing.get_context("fork").Process(target=work)
    p.start()
    p.join(60)
    with open("child.log") as f:
        report(exitcode=p.exitcode, child=f.read())
"""
    )

    def test_dict_config_in_forked_child(self, scenario: Scenario) -> None:
        """A forwarding child can run dictConfig, and gevent can patch its handlers."""
        facts = scenario.run(self.BODY, None).facts
        assert facts == {"exitcode": 0, "child": "after dictConfig\n"}


class TestQuietFork:
    BODY = (
        PRELUDE
        + """
import threading, warnings

def fork_and_wait(in_child=lambda: None):
    pid = os.fork()
    if pid == 0:
        in_child()
        os._exit(0)
    os.waitpid(pid, 0)

def fork_warnings(in_child=lambda: None):
    # os.fork() reports the warning as unraisable under an "error" filter,
    # so record it instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fork_and_wait(in_child)
    return [str(w.message) for w in caught if w.category is DeprecationWarning]

if __name__ == "__main__":
    configure()
    ours = fork_warnings(lambda: logging.info("child"))  # our listener thread runs
    again = fork_warnings()  # a second fork: on 3.13 the filter carries over to it
    # Somebody else's thread: then the warning is theirs, and it stays.
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    theirs = fork_warnings()
    stop.set()
    t.join()
    report(lines=lines(), ours=ours + again, theirs=len(theirs))
"""
    )

    def test_our_thread_causes_no_warning(self, scenario: Scenario) -> None:
        """3.12+: the listener thread is not why fork() warns; a user's thread still is."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["lines"] == ["MainProcess|root|child"]
        assert facts["ours"] == []
        assert facts["theirs"] == (1 if sys.version_info >= (3, 12) else 0)

    def test_control_without_the_filter(self, scenario: Scenario) -> None:
        """Control: with the filter disabled, 3.12+ does warn about our listener thread."""
        body = self.BODY.replace(
            "    configure()\n",
            "    configure()\n    from forksafe_logging import _fork_warning\n"
            "    _fork_warning.forget()\n",
        )
        facts = scenario.run(body, None).facts
        assert len(facts["ours"]) == (2 if sys.version_info >= (3, 12) else 0)


class TestDictConfig:
    BODY = (
        PRELUDE
        + """
import logging.config

CONFIG = {
    "version": 1,
    "formatters": {"plain": {"format": "%(processName)s %(message)s"}},
    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "out.log", "formatter": "plain"},
        "other": {"class": "logging.FileHandler", "filename": "other.log", "formatter": "plain"},
        "aqueue": {"class": "forksafe_logging.QueueHandler", "handlers": ["file", "other"]},
    },
    "root": {"handlers": ["aqueue"], "level": "INFO"},
}
logging.config.dictConfig(CONFIG)

def work():
    logging.info("from the child")

if __name__ == "__main__":
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work, name="child")
    p.start()
    p.join(60)
    logging.info("from the top")
    forksafe_logging.flush(10)
    with open("out.log") as f, open("other.log") as g:
        report(file=sorted(f.read().splitlines()), other=sorted(g.read().splitlines()))
"""
    )

    @START_METHODS
    def test_queue_handler_in_dict_config(self, scenario: Scenario, method: str) -> None:
        """dictConfig's {"class": "forksafe_logging.QueueHandler", "handlers": [...]} works."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        expected = ["MainProcess from the top", "child from the child"]
        assert facts == {"file": expected, "other": expected}

    AGAIN = """
import json, logging, logging.config, multiprocessing, os, sys
from scenario_lib import report

def configure():
    # The same dictConfig in the top and, again, in each worker (as uvicorn
    # does with --log-config); no install() anywhere.
    logging.config.dictConfig({
        "version": 1,
        "formatters": {"plain": {"format": "%(writer)s %(processName)s %(message)s"}},
        "filters": {"stamp": {"()": __name__ + ".stamp"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": "out.log", "delay": True,
                     "formatter": "plain", "filters": ["stamp"]},
            "tree": {"class": "forksafe_logging.QueueHandler", "handlers": ["file"]},
        },
        "root": {"handlers": ["tree"], "level": "INFO"},
    })

def stamp():
    def add_writer(record):
        record.writer = "top" if os.getpid() == TOP else "worker"
        return True
    return add_writer

def work(top):
    global TOP
    TOP = top
    configure()
    logging.info("from the child")

if __name__ == "__main__":
    TOP = os.getpid()
    configure()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work, args=(TOP,), name="child")
    p.start()
    p.join(60)
    logging.info("from the top")
    import forksafe_logging
    forksafe_logging.flush(10)
    with open("out.log") as f:
        report(file=sorted(f.read().splitlines()))
"""

    @START_METHODS
    def test_worker_configured_again(self, scenario: Scenario, method: str) -> None:
        """A worker applying the top's dictConfig again sends to the top's listener."""
        facts = scenario.run(self.AGAIN, None, args=[method]).facts
        assert facts == {"file": ["top MainProcess from the top", "top child from the child"]}


class TestSubprocess:
    BODY = (
        PRELUDE
        + """
import subprocess

CHILD = (
    "import logging, sys, forksafe_logging\\n"
    "logging.basicConfig(filename='child-own.log', format='%(message)s')\\n"
    "if 'install' in sys.argv[1]:\\n"
    "    forksafe_logging.install()\\n"  # a tree of its own: its records stay its own
    "if 'attach' in sys.argv[1]:\\n"
    "    forksafe_logging.attach()\\n"   # joins: its own config is replaced by forwarding
    "logging.getLogger('sub').warning('from a subprocess')\\n"
)

if __name__ == "__main__":
    configure()
    code = subprocess.run([sys.executable, "-c", CHILD, sys.argv[2]], timeout=60).returncode
    own = open("child-own.log").read() if os.path.exists("child-own.log") else None
    report(code=code, lines=lines(), own=own)
"""
    )

    def test_attach_from_subprocess(self, scenario: Scenario) -> None:
        """A Python subprocess that calls attach() forwards to the top through the environment."""
        facts = scenario.run(self.BODY, None, args=["attach"]).facts
        assert facts == {"code": 0, "lines": ["MainProcess|sub|from a subprocess"], "own": ""}

    def test_attach_after_install(self, scenario: Scenario) -> None:
        """attach() after the subprocess's own install() still joins the tree."""
        facts = scenario.run(self.BODY, None, args=["install-attach"]).facts
        assert facts == {"code": 0, "lines": ["MainProcess|sub|from a subprocess"], "own": ""}

    def test_install_in_subprocess_stays_separate(self, scenario: Scenario) -> None:
        """A subprocess calling install() (not attach()) keeps its own logging."""
        facts = scenario.run(self.BODY, None, args=["install"]).facts
        assert facts == {"code": 0, "lines": [], "own": "from a subprocess\n"}

    def test_attach_without_a_tree(self, scenario: Scenario) -> None:
        """attach() in a process no tree started is a clear error."""
        body = """
            import os, forksafe_logging
            os.environ.pop("FORKSAFE_LOGGING_LISTENER", None)
            try:
                forksafe_logging.attach()
            except RuntimeError as exc:
                print(exc)
        """
        outcome = scenario.run(body, None)
        assert outcome.returncode == 0, outcome.stderr
        assert "FORKSAFE_LOGGING_LISTENER is not set" in outcome.stdout


class TestChildConfiguresWhileParentWasWriting:
    BODY = """
import fcntl, logging, logging.config, os, termios, threading, time
import forksafe_logging
from scenario_lib import child, install_from_argv, report

r, w = os.pipe()  # nobody reads r: the writer blocks once the pipe is full
stream = os.fdopen(w, "w")
logging.getLogger().addHandler(logging.StreamHandler(stream))
install_from_argv()
blocked = threading.Thread(
    target=lambda: logging.getLogger("t").warning("x" * (1 << 20)), daemon=True)
blocked.start()

def pipe_bytes():
    return int.from_bytes(fcntl.ioctl(r, termios.FIONREAD, b"\\0\\0\\0\\0"), "little")

# The thread is inside write(), holding the handler's and the stream's locks,
# once the pipe holds all it can and the thread is still running.
deadline = time.monotonic() + 10
last = -1
while time.monotonic() < deadline:
    now = pipe_bytes()
    if now == last and now > 0:
        break
    last = now
    blocked.join(0.05)
full = pipe_bytes()

def configure_in_child():
    # What a worker does when importing an application that configures logging.
    logging.config.dictConfig({"version": 1, "root": {"level": "INFO"}})

outcome = child(configure_in_child, timeout=5)
report(outcome=outcome, writer_blocked=blocked.is_alive(), full=full,
       unchanged=pipe_bytes() == full)
os._exit(0)  # logging.shutdown() here would wait for the blocked writer
"""

    def test_dict_config_in_child_never_flushes_inherited_handlers(
        self, scenario: Scenario
    ) -> None:
        """A forwarding child's dictConfig leaves the inherited handlers alone: no hang."""
        facts = scenario.run(self.BODY, {}).facts
        assert facts["writer_blocked"]
        assert facts["outcome"] == "ok"
        # Nothing of the parent's half-written record was written by the child.
        assert facts["unchanged"]
