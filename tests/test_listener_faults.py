"""The listener under faults of the top's own making: handlers that raise
anything, logger names without end, values that do not encode."""

from __future__ import annotations

import sys

import pytest
from conftest import Scenario

pytestmark = pytest.mark.timeout(180)

START_METHODS = pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])

PRELUDE = """
import asyncio, json, logging, multiprocessing, os, sys
import forksafe_logging
from scenario_lib import report

def lines(name="out.log"):
    forksafe_logging.flush(30)
    with open(name, encoding="utf-8", errors="surrogateescape") as f:
        return f.read().splitlines()
"""


class TestHandlerRaises:
    BODY = (
        PRELUDE
        + """
COUNT = 3000

class Raising(logging.Handler):
    # What a handler of the top may raise that is not an Exception.
    def emit(self, record):
        message = record.getMessage()
        if message == "exit":
            sys.exit(3)
        if message == "cancel":
            raise asyncio.CancelledError()
        if message == "interrupt":
            raise KeyboardInterrupt()

def work():
    log = logging.getLogger("w")
    for message in ("before", "exit", "cancel", "interrupt", "exit", "after"):
        log.info(message)
    for i in range(COUNT):  # more than the socket buffers hold, were nobody reading
        log.info("%d %s", i, "z" * 1000)

if __name__ == "__main__":
    logging.basicConfig(filename="out.log", level=logging.INFO, format="%(message)s")
    logging.getLogger().addHandler(Raising())
    forksafe_logging.install()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(90)
    hung = p.is_alive()
    if hung:
        p.kill()
    got = lines()
    report(hung=hung, exitcode=p.exitcode, first=got[:6], flood=len(got) - 6,
           stats=forksafe_logging.QueueListener().stats(),
           alive=[t.name for t in __import__("threading").enumerate()
                  if t.name == "forksafe_logging listener"])
"""
    )

    @START_METHODS
    def test_listener_survives_any_exception(self, scenario: Scenario, method: str) -> None:
        """SystemExit, CancelledError, KeyboardInterrupt from a handler: reported once each."""
        outcome = scenario.run(self.BODY, None, args=[method], timeout=150)
        facts = outcome.facts
        assert facts["hung"] is False
        assert facts["exitcode"] == 0
        # The other handler (the file) got every record, the raising ones too.
        assert facts["first"] == ["before", "exit", "cancel", "interrupt", "exit", "after"]
        assert facts["flood"] == 3000
        assert facts["stats"]["dispatch_errors"] == 4
        assert facts["alive"] == ["forksafe_logging listener"]
        # Reported like Handler.handleError, once per kind.
        for kind in ("SystemExit", "CancelledError", "KeyboardInterrupt"):
            assert outcome.stderr.count(kind + ":") + outcome.stderr.count(kind + "\n") == 1, (
                outcome.stderr
            )


class TestLoggerNames:
    BODY = (
        PRELUDE
        + """
NAMES = 5000

def work():
    for i in range(NAMES):
        logging.getLogger("child.%d.x" % i).warning("n %d", i)
    # Next to loggers the top has: the new logger's parent is the nearest.
    logging.getLogger("quiet.sub.leaf").warning("quiet warning")
    logging.getLogger("quiet.sub.leaf").info("quiet info")
    logging.getLogger("own.sub").warning("own warning")
    logging.getLogger("gone.sub").warning("gone warning")

if __name__ == "__main__":
    logging.basicConfig(filename="out.log", level=logging.INFO, format="%(name)s %(message)s")
    quiet = logging.getLogger("quiet")
    quiet.setLevel(logging.WARNING)
    own = logging.getLogger("own")
    own.propagate = False
    handler = logging.FileHandler("own.log")
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    own.addHandler(handler)
    logging.getLogger("gone").disabled = True  # as dictConfig leaves an old logger
    forksafe_logging.install()
    before = len(logging.Logger.manager.loggerDict)
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(90)
    got = lines()
    # The same records logged in this process, for comparison (after counting).
    from forksafe_logging import _plans, _server
    plans = len(_server.current().plans._by_number)
    report(exitcode=p.exitcode, grew=len(logging.Logger.manager.loggerDict) - before,
           plans=plans, most=_plans.MAX_PLANS,
           numbered=sum(1 for line in got if line.startswith("child.")),
           rest=[line for line in got if not line.startswith("child.")],
           own=lines("own.log"))
"""
    )

    @START_METHODS
    def test_no_logger_per_name(self, scenario: Scenario, method: str) -> None:
        """5,000 names from a child add no logger, nor a plan each, to the top; records route."""
        facts = scenario.run(self.BODY, None, args=[method], timeout=150).facts
        assert facts["exitcode"] == 0
        assert facts["grew"] == 0
        # Nor a fast-path plan per name past a bound (each name is one).
        assert facts["most"] < 5000
        assert facts["plans"] <= facts["most"]
        assert facts["numbered"] == 5000
        # As the stdlib would handle them with the loggers made: the level of
        # the nearest ancestor, its handlers, its propagate; a disabled
        # ancestor does not disable a new logger below it.
        assert facts["rest"] == ["quiet.sub.leaf quiet warning", "gone.sub gone warning"]
        assert facts["own"] == ["own.sub own warning"]


class TestAnyValue:
    BODY = (
        PRELUDE
        + """
class BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")

def work():
    loop = {}
    loop["self"] = loop
    values = {"big": 10 ** 5000, "middling": 10 ** 1000, "small": 10 ** 100,
              "bad": BadRepr(), "loop": loop, "nan": float("nan")}
    logging.getLogger("w").info("values", extra=values)
    logging.getLogger("w").info({"event": "dict", "big": -(10 ** 5000), "ok": 1})
    logging.getLogger("w").info("after")

class Show(logging.Formatter):
    def format(self, record):
        if record.getMessage() == "values":
            return json.dumps({k: (v if isinstance(v, int) else str(v)[:30])
                               for k, v in sorted(vars(record).items())
                               if k in ("big", "middling", "small", "bad", "loop", "nan")})
        msg = record.msg
        if isinstance(msg, dict):
            return json.dumps({k: str(v)[:30] for k, v in sorted(msg.items())})
        return record.getMessage()

if __name__ == "__main__":
    handler = logging.FileHandler("out.log")
    handler.setFormatter(Show())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    forksafe_logging.install()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(60)
    report(exitcode=p.exitcode, got=[json.loads(line) if line.startswith("{") else line
                                     for line in lines()])
"""
    )

    @START_METHODS
    def test_every_value_crosses(self, scenario: Scenario, method: str) -> None:
        """Ints of any size, a failing repr, a loop, NaN: the record arrives, values as text."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        assert facts["exitcode"] == 0
        values, event, after = facts["got"]
        assert values["small"] == 10**100  # still a number
        assert values["middling"].startswith("1000000000")  # text: too long a number
        assert values["big"].startswith("0x")  # over the digit limit: hexadecimal
        assert values["bad"].startswith("<unrepresentable BadRepr")
        assert values["loop"] == "{'self': {...}}"
        assert values["nan"] == "nan"
        assert event == {"big": "-0x" + event["big"][3:], "event": "dict", "ok": "1"}
        assert event["big"].startswith("-0x")
        assert after == "after"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the limit on int digits is new in 3.11")
def test_limit_checked_in_this_python() -> None:
    """The premise of TestAnyValue: this Python refuses to print the big int."""
    with pytest.raises(ValueError, match="integer string conversion"):
        str(10**5000)


class TestListenerThreadDies:
    """The listener thread ends for good (here: an exception delivered to it from outside)."""

    BODY = (
        PRELUDE
        + """
import ctypes, threading, time

COUNT = 2000
logging.basicConfig(filename="out.log", level=logging.INFO, format="%(message)s")
forksafe_logging.install()
log = logging.getLogger("w")
connected_r, connected_w = os.pipe()
go_r, go_w = os.pipe()
done_r, done_w = os.pipe()
pid = os.fork()
if pid == 0:
    log.info("before")  # connected from here on
    os.write(connected_w, b"c")
    os.read(go_r, 1)
    started = time.monotonic()
    for i in range(COUNT):  # more than the socket buffers hold, were nobody reading
        log.info("after %d %s", i, "z" * 1000)
    os.write(done_w, repr(time.monotonic() - started).encode())
    os._exit(0)
os.read(connected_r, 1)
# "before" handled first: the exception below must not land in its dispatch
# (that aborts the record's handler, counted as a dispatch error: another
# test's subject), which a busy machine made happen.
forksafe_logging.flush(30)
listener = [t for t in threading.enumerate() if t.name == "forksafe_logging listener"][0]
deadline = time.monotonic() + 20
while listener.is_alive() and time.monotonic() < deadline:
    # A real exception, raised in the thread when it next runs Python code;
    # a flush() wakes it from its poll(). Where the listener catches it (in
    # a dispatch), once more, after it was taken: a second one pending would
    # hit the thread's last reads, so the thread gets seconds to end first.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(listener.ident), ctypes.py_object(SystemExit))
    forksafe_logging.flush(0.5)
    listener.join(5)
dead = not listener.is_alive()
started = time.monotonic()
log.info("top after")  # the top's records do not wait for a dead listener
top_seconds = time.monotonic() - started
os.write(go_w, b"g")
import select
ready, _, _ = select.select([done_r], [], [], 60)
child_seconds = float(os.read(done_r, 100)) if ready else None
if not ready:
    os.kill(pid, 9)
os.waitpid(pid, 0)
with open("out.log") as f:
    got = f.read().splitlines()
report(dead=dead, top_seconds=top_seconds, child_seconds=child_seconds, file=got)
"""
    )

    def test_children_fall_back(self, scenario: Scenario) -> None:
        """Senders learn it at their next record and write to their stderr, without waiting."""
        outcome = scenario.run(self.BODY, None, timeout=150)
        facts = outcome.facts
        assert facts["dead"] is True
        assert "the listener thread stopped" in outcome.stderr
        # Bounds, not speeds: a sender that waited for the dead listener
        # would never finish (the socket buffers hold far less than this).
        assert facts["child_seconds"] is not None
        assert facts["child_seconds"] < 30
        assert facts["top_seconds"] < 1
        assert facts["file"][0] == "before", facts["file"][:3]
        assert "top after" in facts["file"]
        # Nothing lost: each record after the listener died is on the
        # child's stderr, or in the file if it was read before the end.
        for i in range(2000):
            line = "after %d %s" % (i, "z" * 1000)
            assert line in outcome.stderr or line in facts["file"], i
