"""A forked child of a forwarding process: what its fork hook does, and what waits for first use.

The hook of a forwarding child arms a switch and leaves the loggers as they
were (see ``_forward``): they are rewired on the
child's first record or its first step through logging's module lock. These
tests hold that switch to the guarantees the eager rewiring gave, and check
the descriptors and objects the hook leaves behind.
"""

from __future__ import annotations

import pytest
from conftest import Scenario

pytestmark = pytest.mark.timeout(120)

#: A file handler in the top process whose flush() and close() note the pid
#: that called them, and install().
PRELUDE = """
import errno, gc, json, logging, os, sys, threading
import forksafe_logging
from forksafe_logging import _endpoint, _forward, _server, _settings
from forksafe_logging._state import state
from scenario_lib import forked as in_child, report

class Noting(logging.FileHandler):
    # Any call from another process than the top is a use of an inherited handler.
    def flush(self):
        with open("calls.log", "a") as f:
            f.write("flush %d\\n" % os.getpid())
        super().flush()

    def close(self):
        with open("calls.log", "a") as f:
            f.write("close %d\\n" % os.getpid())
        super().close()

TOP = os.getpid()
handler = Noting("out.log")
handler.setFormatter(logging.Formatter("%(process)d|%(name)s|%(message)s"))
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
forksafe_logging.install()

def calls_from_others():
    try:
        with open("calls.log") as f:
            return [c for c in f.read().split("\\n") if c and not c.endswith(" %d" % TOP)]
    except FileNotFoundError:
        return []

def lines():
    forksafe_logging.flush(30)
    handler.flush()
    with open("out.log") as f:
        return [line.split("|", 1)[1] for line in f.read().splitlines()]

def closed(fd):
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False

def armed():
    return {
        "pending": _forward._switch.armed,
        "lock_is_switch": logging._lock is _forward._switch,
        "root_handlers": [type(h).__name__ for h in logging.getLogger().handlers],
    }
"""


class TestRewiredOnFirstUse:
    BODY = (
        PRELUDE
        + """
# Made, and its level looked up (the answer is cached), before the fork:
# logging from it in the child takes no lock until the handlers are called.
log = logging.getLogger("app")
log.info("before the fork")

def child():
    before = armed()
    log.info("from the child")
    after = armed()
    return {"before": before, "after": after}

facts = in_child(child)
# Records of different processes are written in the order they reach the
# listener (docs: Guarantees): wait for the child's before logging after it.
forksafe_logging.flush(30)
log.info("from the top")
report(facts=facts, lines=lines(), others=calls_from_others())
"""
    )

    def test_first_record_rewires(self, scenario: Scenario) -> None:
        """The hook only arms the switch; the first record rewires, then goes once, via the top."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["facts"]["before"] == {
            "pending": True,
            "lock_is_switch": True,
            "root_handlers": ["Noting"],
        }
        assert facts["facts"]["after"] == {
            "pending": False,
            "lock_is_switch": False,
            "root_handlers": ["QueueHandler"],
        }
        assert facts["lines"] == [
            "app|before the fork",
            "app|from the child",
            "app|from the top",
        ]
        assert facts["others"] == []


class TestConfigurationBeforeFirstRecord:
    BODY = (
        PRELUDE
        + """
import logging.config

def force_basic_config():
    # Closes every handler on the root logger: the inherited one would be
    # flushed and closed in the child if the loggers were not rewired first.
    logging.basicConfig(filename="child.log", force=True, format="%(message)s")
    logging.getLogger("app").warning("basicConfig")
    logging.shutdown()
    return armed()

def dict_config():
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"own": {"class": "logging.FileHandler", "filename": "child.log",
                             "formatter": "bare"}},
        "formatters": {"bare": {"format": "%(message)s"}},
        "root": {"handlers": ["own"], "level": "INFO"},
    })
    logging.getLogger("app").info("dictConfig")
    logging.shutdown()
    return armed()

def add_handler():
    own = logging.FileHandler("child.log")
    own.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("app").addHandler(own)
    logging.getLogger("app").info("addHandler")
    logging.shutdown()
    return armed()

def get_logger_then_propagate():
    # Changes made without the module lock, after a step through it, are kept.
    log = logging.getLogger("late")
    log.propagate = False
    log.info("propagate")
    return armed()

work = {"basicConfig": force_basic_config, "dictConfig": dict_config,
        "addHandler": add_handler, "getLogger": get_logger_then_propagate}[sys.argv[2]]
facts = in_child(work)
try:
    with open("child.log") as f:
        child_lines = f.read().splitlines()
except FileNotFoundError:
    child_lines = []
report(facts=facts, lines=lines(), child=child_lines, others=calls_from_others())
"""
    )

    def test_basic_config_force(self, scenario: Scenario) -> None:
        """``basicConfig(force=True)`` first rewires: it never closes an inherited handler."""
        facts = scenario.run(self.BODY, None, args=["basicConfig"]).facts
        assert facts["others"] == []
        # It replaced the root's handlers, forwarder included, as it would
        # have had the fork rewired them at once: the child's record is its own.
        assert facts["child"] == ["basicConfig"]
        assert facts["lines"] == []
        assert facts["facts"]["pending"] is False

    def test_dict_config(self, scenario: Scenario) -> None:
        facts = scenario.run(self.BODY, None, args=["dictConfig"]).facts
        assert facts["others"] == []
        assert facts["child"] == ["dictConfig"]
        assert facts["lines"] == []

    def test_add_handler(self, scenario: Scenario) -> None:
        """A handler the child adds gets its records; each is forwarded too, once."""
        facts = scenario.run(self.BODY, None, args=["addHandler"]).facts
        assert facts["others"] == []
        assert facts["child"] == ["addHandler"]
        assert facts["lines"] == ["app|addHandler"]

    def test_get_logger_then_propagate(self, scenario: Scenario) -> None:
        """``getLogger()`` rewires; a logger the child then cuts off forwards nothing."""
        facts = scenario.run(self.BODY, None, args=["getLogger"]).facts
        assert facts["others"] == []
        assert facts["facts"]["pending"] is False
        assert facts["lines"] == []


class TestUninstallBeforeFirstUse:
    BODY = (
        PRELUDE
        + """
def child():
    forksafe_logging.uninstall()
    state = armed()
    state["call_handlers_restored"] = (
        logging.Logger.callHandlers is not _forward._rewire_then_call_handlers)
    logging.getLogger("app").info("after uninstall")
    logging.shutdown()
    return state

facts = in_child(child)
report(facts=facts, lines=lines())
"""
    )

    def test_keeps_what_it_inherited(self, scenario: Scenario) -> None:
        """``uninstall()`` in a child that never logged: its inherited handlers write, as before."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["facts"] == {
            "pending": False,
            "lock_is_switch": False,
            "root_handlers": ["Noting"],
            "call_handlers_restored": True,
        }
        assert facts["lines"] == ["app|after uninstall"]


class TestOwnLoggerClass:
    BODY = (
        PRELUDE
        + """
class Dispatching(logging.Logger):
    # Dispatches its own way: a switch on Logger.callHandlers would not see it.
    def callHandlers(self, record):
        for h in self.handlers or logging.getLogger().handlers:
            h.handle(record)

logging.setLoggerClass(Dispatching)
log = logging.getLogger("own")

def child():
    state = armed()
    log.info("own class")
    return state

facts = in_child(child)
report(facts=facts, lines=lines(), others=calls_from_others())
"""
    )

    def test_rewired_in_the_hook(self, scenario: Scenario) -> None:
        facts = scenario.run(self.BODY, None).facts
        assert facts["facts"] == {
            "pending": False,
            "lock_is_switch": False,
            "root_handlers": ["QueueHandler"],
        }
        assert facts["lines"] == ["own|own class"]
        assert facts["others"] == []


class TestThreadsRace:
    BODY = (
        PRELUDE
        + """
def child():
    start = threading.Barrier(8)
    def logs(n):
        start.wait()
        for i in range(50):
            logging.getLogger("t%d" % n).info("%d %d", n, i)
    threads = [threading.Thread(target=logs, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return [t.is_alive() for t in threads]

alive = in_child(child)
report(alive=alive, lines=lines(), others=calls_from_others())
"""
    )

    def test_each_record_once(self, scenario: Scenario) -> None:
        """Eight threads of a child log their first records at once: each arrives once."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["alive"] == [False] * 8
        assert sorted(facts["lines"]) == sorted(
            "t%d|%d %d" % (n, n, i) for n in range(8) for i in range(50)
        )
        assert facts["others"] == []


class TestGrandchildBeforeFirstUse:
    BODY = (
        PRELUDE
        + """
def grandchild():
    logging.getLogger("g").info("from the grandchild")
    return armed()

def child():
    if sys.argv[2] == "patched":
        # What gevent's patch_all() does in a gunicorn worker: a new module
        # lock, which the switch never sees taken, so this child is still
        # armed when it forks.
        logging._lock = threading.RLock()
    # Otherwise it forks before using logging: logging's own before-fork
    # hook takes the module lock, which rewires this child first.
    state = in_child(grandchild)
    logging.getLogger("c").info("from the child")
    return state

facts = in_child(child)
report(facts=facts, lines=lines(), others=calls_from_others())
"""
    )

    @pytest.mark.parametrize("lock", ["logging's", "patched"])
    def test_both_forward_once(self, scenario: Scenario, lock: str) -> None:
        """Both forward once; a grandchild of a child still armed is rewired in its hook."""
        facts = scenario.run(self.BODY, None, args=[lock]).facts
        assert sorted(facts["lines"]) == ["c|from the child", "g|from the grandchild"]
        assert facts["others"] == []
        # The grandchild of a child that forwards already forwards: no switch.
        assert facts["facts"]["pending"] is False


class TestChannelDescriptor:
    BODY = (
        PRELUDE
        + """
from forksafe_logging import _channel

def grandchild():
    was_closed = closed(fd)
    # Open files until one has the number the hook closed (the lowest free).
    files = []
    while fd not in {f.fileno() for f in files} and len(files) < 64:
        files.append(open(os.devnull, "rb"))
    # Its own connection; the inherited Channel object is dropped.
    logging.getLogger("g").info("from the grandchild")
    gc.collect()
    # Still the file: not closed, nor closed and the number taken again.
    still = not closed(fd) and os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    return {"closed_by_hook": was_closed, "reused_still_open": still}

def child():
    global fd
    logging.getLogger("c").info("from the child")  # connects
    fd = state.channel.sock.fileno()
    listed = fd in state.child_closes
    result = {"listed": listed, "grandchild": in_child(grandchild)}
    # A connection this process closes itself (as after a timeout) is
    # unlisted first, and then its socket object may be freed.
    import weakref
    ch = _channel.channel()
    sock = weakref.ref(ch.sock)
    ledger = ch.ledger
    ch._discard()
    ledger.close()
    del ledger
    gc.collect()
    result["after_discard"] = {"listed": fd in state.child_closes, "freed": sock() is None}
    return result

report(child=in_child(child), lines=lines(), others=calls_from_others())
"""
    )

    def test_closed_once_and_never_again(self, scenario: Scenario) -> None:
        """A grandchild closes its copy of its parent's connection, and only once."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["child"] == {
            "listed": True,
            "grandchild": {"closed_by_hook": True, "reused_still_open": True},
            "after_discard": {"listed": False, "freed": True},
        }
        assert sorted(facts["lines"]) == ["c|from the child", "g|from the grandchild"]
        assert facts["others"] == []


class TestListenerDescriptors:
    BODY = (
        PRELUDE
        + """
import atexit

inherited = list(state.child_closes)
server = _server.current()

def grandchild():
    return [not closed(fd) for fd in reopened]

def child():
    global reopened
    was_closed = [closed(fd) for fd in inherited]
    # Open files until they have the numbers the hook closed (the lowest free).
    files = []
    while not set(inherited) <= {f.fileno() for f in files} and len(files) < 64:
        files.append(open(os.devnull, "rb"))
    reopened = [f.fileno() for f in files if f.fileno() in inherited]
    # A grandchild must not close them again, though it inherits them.
    open_in_grandchild = in_child(grandchild)
    # Nor may the inherited listener's sockets, were they ever freed: drop
    # every reference to them that this child can, and collect. (The package
    # keeps the listener for ever; CPython also keeps, in a child, the
    # bootstrap of a thread that does not run there, and so the listener.)
    global server
    atexit._clear()
    server = None
    gc.collect()
    return {
        "closed_by_hook": was_closed,
        "reused": sorted(reopened) == sorted(inherited),
        "open_in_grandchild": open_in_grandchild,
        "open_after_collect": [not closed(fd) for fd in reopened],
        "left_to_close": list(state.child_closes),
    }

report(count=len(inherited), child=in_child(child))
"""
    )

    def test_closed_once_and_never_again(self, scenario: Scenario) -> None:
        """The child closes its copies of the listener's descriptors; none is closed again."""
        facts = scenario.run(self.BODY, None).facts
        count = facts["count"]
        # The listening socket and the two ends of the listener's wake-up pipe.
        assert count >= 3
        child = facts["child"]
        assert child["closed_by_hook"] == [True] * count
        assert child["reused"] is True
        assert child["open_in_grandchild"] == [True] * count
        assert child["open_after_collect"] == [True] * count
        assert child["left_to_close"] == []


class TestStalePlan:
    BODY = (
        PRELUDE
        + """
import types

# structlog's write locks, as the hooks find them: a fork takes this one.
lock = threading.Lock()
output = types.ModuleType("structlog._output")
output.WRITE_LOCKS = {sys.stderr: lock}
sys.modules["structlog"] = types.ModuleType("structlog")
sys.modules["structlog._output"] = output

def grandchild():
    return True

def child():
    # The parent's plan of this fork (which took the lock) is in this
    # child's memory. With no structlog lock left, the next fork makes no
    # plan of its own: its after-fork hook must not act on the parent's.
    output.WRITE_LOCKS.clear()
    lock.acquire()  # this child's own use of the lock, across its fork
    in_child(grandchild)
    still_held = lock.locked()
    lock.release()
    return still_held

still_held = in_child(child)
report(still_held=still_held)
"""
    )

    def test_not_released_by_a_child(self, scenario: Scenario) -> None:
        outcome = scenario.run(self.BODY, None)
        assert outcome.facts == {"still_held": True}
        assert "Exception ignored" not in outcome.stderr, outcome.stderr


class TestImportFootprint:
    BODY = """
import sys
before = set(sys.modules)
import forksafe_logging
imported = set(sys.modules) - before
forksafe_logging.install()
installed = set(sys.modules) - before
from scenario_lib import report
report(imported=sorted(imported), installed=sorted(installed))
"""

    def test_what_the_package_imports(self, scenario: Scenario) -> None:
        """Each module a process imports makes its forks slower: none of these is needed."""
        facts = scenario.run(self.BODY, None).facts
        heavy = {
            "typing",  # large; only needed by the type checker
            "hashlib",  # loads OpenSSL's libcrypto
            "_hashlib",
            "hmac",
            "shutil",  # imports zlib, bz2, lzma
            "logging.config",  # only for child="reset" with a dict
            "multiprocessing.queues",
            "forksafe_logging._held",  # only for warn_held_locks
            "forksafe_logging._doctor",
        }
        assert heavy & set(facts["installed"]) == set()
        # Never-freed objects are made without ctypes (and libffi).
        assert "ctypes" not in facts["installed"]


class TestAbandon:
    """What the package abandons is never freed, not even at interpreter exit."""

    BODY = r"""
import gc, weakref
from forksafe_logging import _streams
from scenario_lib import report

# Each object gets a class in a namespace of its own: what is pinned keeps
# alive all it reaches, its class's globals included, and __main__'s must
# stay out of that or the control would be pinned too.
LOUD = r'''
import os
class Loud:
    def __del__(self, write=os.write):  # bound now: globals go first at exit
        write(2, b"freed: " + NAME + b"\n")
'''

def loud(name):
    namespace = {"NAME": name}
    exec(LOUD, namespace)
    return namespace["Loud"]()

# The control: only a module global refers to it, so it is freed when the
# interpreter shuts down, and its __del__ runs.
control = loud(b"control")
pinned = loud(b"pinned")
ref = weakref.ref(pinned)
_streams.abandon(pinned)
del pinned
gc.collect()
report(alive=ref() is not None)
"""

    def test_survives_collection_and_exit(self, scenario: Scenario) -> None:
        outcome = scenario.run(self.BODY, None)
        assert outcome.facts == {"alive": True}
        assert "freed: control" in outcome.stderr
        assert "freed: pinned" not in outcome.stderr


def test_private_directory_without_tempfile(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback socket directory: 0700, under TMPDIR, named after its owner's pid."""
    import os
    import stat
    import sys
    from pathlib import Path

    from forksafe_logging import _endpoint

    monkeypatch.delitem(sys.modules, "tempfile", raising=False)
    missing = Path(str(tmp_path)) / "missing"
    monkeypatch.setenv("TMPDIR", str(missing))  # not there: the next place is tried
    monkeypatch.setenv("TEMP", str(tmp_path))
    made = Path(_endpoint._private_directory())
    assert made.parent == Path(str(tmp_path))
    assert made.name.startswith("forksafe-logging-%d-" % os.getpid())
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
    other = Path(_endpoint._private_directory(str(tmp_path)))
    assert other != made
    assert other.parent == Path(str(tmp_path))


class TestBoundedAcquire:
    BODY = (
        PRELUDE
        + """
def child():
    # A thread holds logging's lock (the switch's real one) when another
    # tries it without blocking: the attempt must not wait to rewire.
    held, release = threading.Event(), threading.Event()
    def holder():
        with logging._lock.real if hasattr(logging._lock, "real") else logging._lock:
            held.set()
            release.wait(30)
    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    first = logging._lock.acquire(False)
    bounded = logging._lock.acquire(True, 0.05)
    release.set()
    t.join(30)
    state = armed()
    got = logging._lock.acquire(False)
    if got:
        logging._lock.release()
    after = armed()
    return {"first": first, "bounded": bounded, "still_armed": state["pending"], "got": got,
            "after": after["pending"]}

report(facts=in_child(child))
"""
    )

    def test_does_not_wait(self, scenario: Scenario) -> None:
        facts = scenario.run(self.BODY, None).facts["facts"]
        assert facts == {
            "first": False,
            "bounded": False,
            "still_armed": True,
            "got": True,
            "after": False,
        }
