"""structlog: its write locks in forked children, and events from every process to the top.

Skipped, with the reason shown, when structlog is not installed; the test
command runs this file against the oldest structlog the extra allows and
against the newest.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import PACKAGE_HOME, WITH, WITHOUT, Scenario

structlog = pytest.importorskip(
    "structlog", reason="structlog is not installed (pip install 'forksafe_logging[structlog]')"
)

from forksafe_logging import _decode, _structlog_locks, _wire  # noqa: E402
from forksafe_logging.structlog import SendToListener, add_process_info  # noqa: E402

pytestmark = pytest.mark.timeout(180)

START_METHODS = pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
STRUCTLOG_VERSION = tuple(int(p) for p in structlog.__version__.split(".")[:2])


def test_report_version() -> None:
    """Names the structlog this run tests (the test command runs two)."""
    print("structlog", structlog.__version__)
    assert STRUCTLOG_VERSION >= (21, 1)


# --- structlog's own write locks in forked children -------------------------

#: A parent thread writes structlog lines in a tight loop while the parent
#: forks; each child writes one line. structlog holds the file's write lock
#: for most of each iteration (the chain is nearly empty), so without the
#: library a fork often copies it held.
WRITER = """
import collections, io, json, os, sys, threading
from scenario_lib import child, install_from_argv, report

order, factory_name, forks = sys.argv[2], sys.argv[3], int(sys.argv[4])
if order == "after":
    install_from_argv()
import structlog
if order == "before":
    install_from_argv()

if factory_name == "bytes":
    sink = open("lines.log", "ab", buffering=0)
    factory = structlog.BytesLoggerFactory(sink)
    render = lambda logger, name, ed: ed["event"].encode()
else:
    sink = open("lines.log", "a")
    factory = structlog.PrintLoggerFactory(sink)
    render = lambda logger, name, ed: ed["event"]
structlog.configure(processors=[render], logger_factory=factory, cache_logger_on_first_use=True)
log = structlog.get_logger()

stop = threading.Event()
def write_forever():
    while not stop.is_set():
        log.info("parent " + "x" * 200)
writer = threading.Thread(target=write_forever, daemon=True)
writer.start()

outcomes = collections.Counter()
for _ in range(forks):
    outcome = child(lambda: log.info("child %d" % os.getpid()), timeout=5)
    outcomes[outcome] += 1
    if outcome == "hung" and sys.argv[1] == "null":
        break  # the control has seen what it came for
stop.set()
writer.join(10)
report(outcomes=dict(outcomes))
"""

FORKS = int(os.environ.get("FORKSAFE_STRESS_RUNS", "40"))


@pytest.mark.parametrize("factory", ["print", "bytes"])
def test_plain_structlog_child_hangs(scenario: Scenario, factory: str) -> None:
    """Without install(), a child forked while a thread writes a line hangs (positive control)."""
    facts = scenario.run(WRITER, WITHOUT, args=["before", factory, "60"], timeout=170).facts
    assert facts["outcomes"].get("hung", 0) >= 1, facts


#: The writer holds the lock for microseconds, but on a loaded machine it can
#: be descheduled while holding it for longer than the default 0.1 s
#: fork_timeout; the fork then goes ahead, and if the thread was inside the
#: file's write(), the file object's own lock stays held in the child (the
#: documented limit, CPython gh-84579). A longer fork_timeout keeps that
#: scheduling accident out of a test of the locks themselves.
PATIENT = {"fork_timeout": 2.0}


@pytest.mark.stress
@pytest.mark.parametrize("mode", [PATIENT, {**WITH, **PATIENT}], ids=["forward", "inherit"])
@pytest.mark.parametrize("factory", ["print", "bytes"])
@pytest.mark.parametrize("order", ["before", "after"])
def test_installed_children_never_hang(
    scenario: Scenario, order: str, factory: str, mode: Dict[str, Any]
) -> None:
    """With install() (before or after structlog's import, any mode), no child hangs."""
    facts = scenario.run(WRITER, mode, args=[order, factory, str(FORKS)], timeout=170).facts
    assert facts["outcomes"] == {"ok": FORKS}


def test_write_locks_are_found() -> None:
    """The hooks see the lock of every file structlog writes to, in this structlog's layout."""
    sink = io.StringIO()
    logger = structlog.PrintLogger(sink)
    found = {id(f): lock for f, lock in _structlog_locks.write_locks()}
    assert found[id(sink)] is logger._lock


def test_doctor_lists_write_locks() -> None:
    """The fork-hazard report lists the lock of a file structlog writes to, as covered."""
    import forksafe_logging

    sink = io.StringIO()
    sink.name = "<doctor-sink>"  # type: ignore[misc]
    logger = structlog.PrintLogger(sink)
    hazards = [h for h in forksafe_logging.diagnose().hazards if h.kind == "structlog-lock"]
    (hazard,) = [h for h in hazards if h.where == "structlog's write lock for <doctor-sink>"]
    assert hazard.covered
    assert logger._lock is dict(_structlog_locks.write_locks())[sink]


HELD = """
import io, os, sys, threading, warnings
from scenario_lib import child, report
import structlog
import forksafe_logging

forksafe_logging.install(warn_held_locks=True)
sink = io.StringIO()
sink.name = "<held-sink>"
logger = structlog.PrintLogger(sink)
taken, release = threading.Event(), threading.Event()

def hold():
    with logger._lock:
        taken.set()
        release.wait(30)

holder = threading.Thread(target=hold, name="structlog-writer", daemon=True)
holder.start()
taken.wait(10)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    outcome = child(lambda: logger.msg("from the child"), timeout=5)
release.set()
holder.join(10)
report(child=outcome, messages=[
    str(w.message) for w in caught if issubclass(w.category, forksafe_logging.HeldLockWarning)
])
"""


def test_held_write_lock_warns(scenario: Scenario) -> None:
    """warn_held_locks: a fork while a thread holds a structlog write lock warns about it."""
    facts = scenario.run(HELD).facts
    assert facts["child"] == "ok"
    [message] = facts["messages"]
    # A plain lock: the holder is named only when it is in structlog's code.
    assert "- structlog's write lock for <held-sink>, held by a thread it does not name" in message


# --- SendToListener and add_process_info, in one process --------------------


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Any:
    handler = _Keep()
    target = logging.getLogger("structlog-test")
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    yield handler
    target.removeHandler(handler)
    target.setLevel(logging.NOTSET)


def _bound(processors: List[Any], out: Any) -> Any:
    return structlog.wrap_logger(structlog.PrintLogger(out), processors=processors)


def test_send_to_listener_hands_the_event_to_the_standard_logger(kept: _Keep) -> None:
    """The event becomes a record of the named logger, as ProcessorFormatter expects."""
    out = io.StringIO()
    log = _bound([SendToListener("structlog-test")], out)
    log.warning("disk full", free=0, where=object(), nested={"a": (1, 2)})
    line = sys._getframe().f_lineno - 1
    assert out.getvalue() == ""
    (record,) = kept.records
    assert record.levelno == logging.WARNING
    assert record.msg["event"] == "disk full"
    assert record.msg["free"] == 0
    assert record.msg["where"].startswith("<object object at ")
    assert record.msg["nested"] == {"a": [1, 2]}
    assert record._name == "warning"  # type: ignore[attr-defined]
    assert record._logger is logging.getLogger("structlog-test")  # type: ignore[attr-defined]
    assert (record.pathname, record.lineno, record.funcName) == (
        __file__,
        line,
        "test_send_to_listener_hands_the_event_to_the_standard_logger",
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer(sort_keys=True)
    )
    assert formatter.format(record) == (
        '{"event": "disk full", "free": 0, "nested": {"a": [1, 2]}, "where": "%s"}'
        % record.msg["where"]
    )


def test_send_to_listener_formats_exceptions_where_they_happen(kept: _Keep) -> None:
    log = _bound([SendToListener("structlog-test")], io.StringIO())
    try:
        {}["missing"]
    except KeyError:
        log.error("lookup failed", exc_info=True)
    (record,) = kept.records
    assert record.levelno == logging.ERROR
    assert "exc_info" not in record.msg
    assert record.msg["exception"].startswith("Traceback (most recent call last):")
    assert record.msg["exception"].endswith("KeyError: 'missing'")


def test_send_to_listener_after_a_renderer(kept: _Keep) -> None:
    """After a renderer the message is the rendered line; bytes are decoded."""
    log = _bound(
        [structlog.processors.JSONRenderer(), SendToListener("structlog-test")], io.StringIO()
    )
    log.info("hi", n=1)
    raw = _bound([lambda *_: b"caf\xc3\xa9 \xff", SendToListener("structlog-test")], io.StringIO())
    raw.error("ignored")
    assert [r.getMessage() for r in kept.records] == ['{"n": 1, "event": "hi"}', "café \\xff"]
    assert [r.levelno for r in kept.records] == [logging.INFO, logging.ERROR]
    assert not hasattr(kept.records[0], "_logger")


def test_send_to_listener_respects_the_standard_levels(kept: _Keep) -> None:
    logging.getLogger("structlog-test").setLevel(logging.ERROR)
    log = _bound([SendToListener("structlog-test")], io.StringIO())
    log.info("dropped")
    log.critical("kept")
    assert [r.msg["event"] for r in kept.records] == ["kept"]


def test_send_to_listener_level_from_the_event(kept: _Keep) -> None:
    """A method name that is no level (``log``) takes the event's ``level`` key."""
    processor = SendToListener("structlog-test")
    with pytest.raises(structlog.DropEvent):
        processor(None, "custom", {"event": "e", "level": "debug"})
    with pytest.raises(structlog.DropEvent):
        processor(None, "custom", {"event": "f"})
    assert [r.levelno for r in kept.records] == [logging.DEBUG, logging.INFO]


def test_send_to_listener_misuse() -> None:
    with pytest.raises(TypeError, match="logger_name must be a str"):
        SendToListener(42)  # type: ignore[arg-type]
    wrapped = structlog.stdlib.ProcessorFormatter.wrap_for_formatter
    log = _bound([wrapped, SendToListener()], io.StringIO())
    with pytest.raises(TypeError, match=r"must be the last processor.*got tuple"):
        log.info("x")


def test_add_process_info() -> None:
    event = add_process_info(None, "info", {"event": "e", "pid": -1})
    assert event == {
        "event": "e",
        "pid": os.getpid(),
        "process_name": "MainProcess",
        "parent_pid": os.getppid(),
    }


# --- the event dict on the wire ---------------------------------------------


def _payload(frame: bytes) -> bytes:
    (length,) = _wire.HEADER.unpack(frame[:4])
    assert len(frame) == 4 + length
    return frame[4:]


def test_event_dicts_cross_the_wire_structured() -> None:
    """A dict message arrives a dict, ProcessorFormatter's logger rebuilt, tracebacks as text."""
    sender = logging.getLogger("app.sender")
    try:
        raise ValueError("bad")
    except ValueError:
        record = sender.makeRecord(
            "app.sender",
            logging.ERROR,
            __file__,
            1,
            {"event": "e", "n": 1, "when": object(), "t": (1, "a"), "exc_info": True},
            None,
            None,
            extra={"_logger": sender, "_name": "exception"},
        )
        msg = _wire.message(record)
    decoder = _decode.Decoder()
    assert decoder.feed(_payload(_wire.definition(1, _wire.static_key("", record)))) is None
    route, received = decoder.feed(_payload(_wire.record_frame(1, msg, record)))  # type: ignore[misc]
    assert route == ""
    assert received.msg["event"] == "e"
    assert received.msg["n"] == 1
    assert received.msg["t"] == [1, "a"]
    assert received.msg["when"].startswith("<object object")
    assert "exc_info" not in received.msg
    assert received.msg["exception"].endswith("ValueError: bad")
    assert received._logger is sender  # type: ignore[attr-defined]
    assert received._name == "exception"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("exc_info", "expected"),
    [
        (False, None),
        (None, None),
        (ValueError("given"), "ValueError: given"),
        ((None, None, None), None),
    ],
)
def test_event_exc_info_forms(exc_info: Any, expected: Any) -> None:
    plain = _wire.event({"event": "e", "exc_info": exc_info, 1: float("nan")})
    assert "exc_info" not in plain
    assert plain["1"] == "nan"
    if expected is None:
        assert "exception" not in plain
    else:
        assert plain["exception"].endswith(expected)


def test_plain_dict_messages_of_the_stdlib_keep_their_text() -> None:
    """A stdlib record with a dict message and plain values reads the same after the hop."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, {"a": 1, "b": [None]}, None, None)
    received = logging.makeLogRecord({"msg": _wire.message(record), "args": None})
    assert received.getMessage() == record.getMessage()


# --- events from every process reach the top: structlog on its own ------------

#: What both scenarios below do once the top's handler is set up: install(),
#: four workers of ``work(n)`` under the start method in ``argv[2]``, and the
#: events the top process wrote.
RUN_WORKERS = """
import json, multiprocessing, os, sys
import forksafe_logging

def run_workers():
    forksafe_logging.install()
    ctx = multiprocessing.get_context(sys.argv[2])
    procs = [ctx.Process(target=work, args=(n,)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    forksafe_logging.flush(30)
    with open("events.log") as f:
        events = [json.loads(line) for line in f]
    return dict(exitcodes=[p.exitcode for p in procs], pids=[p.pid for p in procs],
                top=os.getpid(), events=events)
"""

STANDALONE = (
    RUN_WORKERS
    + """
import json, logging, multiprocessing, os, sys
import structlog
import forksafe_logging
from forksafe_logging.structlog import SendToListener, add_process_info
from scenario_lib import report

PLACEMENT = sys.argv[3]
# At module level, so spawn and forkserver children configure it too.
chain = [structlog.processors.add_log_level, add_process_info]
if PLACEMENT == "rendered":
    chain += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
chain.append(SendToListener())
structlog.configure(processors=chain, logger_factory=structlog.PrintLoggerFactory(),
                    cache_logger_on_first_use=True)

def work(n):
    log = structlog.get_logger().bind(n=n)
    for i in range(300):
        log.info("step", i=i, opaque=object(), tags=("a", "b"))
    try:
        1 / 0
    except ZeroDivisionError:
        log.error("failed", i=300, exc_info=True)

if __name__ == "__main__":
    handler = logging.FileHandler("events.log")
    if PLACEMENT == "rendered":
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer()))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    report(**run_workers())
"""
)


def _check_events(facts: Dict[str, Any], method: str, processes: int, per_process: int) -> None:
    assert facts["exitcodes"] == [0] * processes
    by_process: Dict[int, List[Dict[str, Any]]] = {}
    for event in facts["events"]:
        by_process.setdefault(event["n"], []).append(event)
    assert sorted(by_process) == list(range(processes))
    for n, events in by_process.items():
        # Once each, in the order logged, from the process that logged them.
        assert [e["i"] for e in events] == list(range(per_process + 1))
        assert {e["pid"] for e in events} == {facts["pids"][n]}
        parents = {e["parent_pid"] for e in events}
        # A forkserver child's parent is the fork server, not the top.
        assert len(parents) == 1
        assert (parents == {facts["top"]}) is (method != "forkserver")
        steps, failure = events[:-1], events[-1]
        assert {e["level"] for e in steps} == {"info"}
        assert all(e["tags"] == ["a", "b"] for e in steps)
        assert all(e["opaque"].startswith("<object object at ") for e in steps)
        assert failure["level"] == "error"
        assert failure["event"] == "failed"
        assert failure["exception"].startswith("Traceback (most recent call last):")
        assert failure["exception"].endswith("ZeroDivisionError: division by zero")


@START_METHODS
@pytest.mark.parametrize("placement", ["dict", "rendered"])
def test_standalone_structlog_events_reach_the_top(
    scenario: Scenario, method: str, placement: str
) -> None:
    """PrintLoggerFactory + SendToListener: each child's events reach the top once, in order."""
    outcome = scenario.run(STANDALONE, None, args=[method, placement], timeout=170)
    facts = outcome.facts
    # structlog printed nothing itself: the report is stdout's only line.
    assert len(outcome.stdout.strip().splitlines()) == 1, outcome.stdout[:2000]
    _check_events(facts, method, 4, 300)


# --- structlog over the standard library ------------------------------------

STDLIB = (
    RUN_WORKERS
    + """
import json, logging, multiprocessing, os, sys
import structlog
import forksafe_logging
from forksafe_logging.structlog import add_process_info
from scenario_lib import report

structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        add_process_info,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)

def work(n):
    log = structlog.get_logger("app.worker").bind(n=n)
    for i in range(300):
        log.info("step", i=i, opaque=object(), tags=("a", "b"))
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("failed", i=300)

class Types(logging.Handler):
    # What the top's formatter is given: the message's type, per record.
    seen = set()
    def emit(self, record):
        self.seen.add(type(record.msg).__name__)

if __name__ == "__main__":
    handler = logging.FileHandler("events.log")
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer()))
    logging.basicConfig(level=logging.INFO, handlers=[handler, Types()])
    facts = run_workers()
    report(**facts, types=sorted(Types.seen),
           loggers=sorted({e["logger"] for e in facts["events"]}))
"""
)


@START_METHODS
def test_structlog_over_stdlib_events_reach_the_top_structured(
    scenario: Scenario, method: str
) -> None:
    """LoggerFactory + ProcessorFormatter: the top's formatter gets event dicts and tracebacks."""
    facts = scenario.run(STDLIB, None, args=[method], timeout=170).facts
    assert facts["types"] == ["dict"]
    assert facts["loggers"] == ["app.worker"]
    _check_events(facts, method, 4, 300)


# --- the recipes in the docs run --------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


@pytest.mark.parametrize("example", ["structlog_standalone.py", "structlog_stdlib.py"])
def test_docs_recipe_runs(tmp_path: Path, example: str) -> None:
    """The recipe programs shown in the docs: four workers' events and the top's, once each."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_HOME))
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / example)],
        cwd=tmp_path,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    workers = sorted(e["n"] for e in events if "n" in e)
    assert workers == [0, 1, 2, 3]
    (done,) = [e for e in events if e["event"] == "done"]
    assert all(e["pid"] != done["pid"] for e in events if "n" in e)
    if example == "structlog_stdlib.py":
        (failure,) = [e for e in events if e["event"] == "cannot divide"]
        assert failure["exception"].endswith("ZeroDivisionError: division by zero")
