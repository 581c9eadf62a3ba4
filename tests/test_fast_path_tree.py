"""The fast path across processes, under every start method: the same file, and no stale plan."""

from __future__ import annotations

import re

import pytest
from conftest import START_METHODS, Scenario

#: Every field that does not change from run to run but the pid.
FORMAT = (
    "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(levelno)d|%(pathname)s|"
    "%(filename)s|%(module)s|%(lineno)d|%(funcName)s|%(threadName)s|%(message)s"
)

SAME_FILE = """
import logging, multiprocessing, os, sys
method, fast = sys.argv[2], sys.argv[3]
os.environ["FORKSAFE_LOGGING_FAST_PATH"] = fast
import forksafe_logging
from scenario_lib import report

def work(warm, go):
    log = logging.getLogger("app.worker")
    # The first record defines its call site: the listener offers a plan
    # when it reads it. Waited for, so that the test knows which records
    # may take the fast path (in real life: those after the offer came).
    log.info("first")
    warm.set()
    go.wait(30)
    for i in range(300):
        log.info("record %d of %s: %s", i, "caf\\u00e9", "\\udcff")
    try:
        {}["missing"]
    except KeyError:
        log.exception("failed %d", 1)
    log.warning("where", stack_info=True)
    logging.getLogger("app").error("last")

if __name__ == "__main__":
    logging.basicConfig(filename="out.log", filemode="w", level=logging.INFO, format=sys.argv[4])
    forksafe_logging.install()
    ctx = multiprocessing.get_context(method)
    warm, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=work, name="worker-1", args=(warm, go))
    p.start()
    warm.wait(30)
    forksafe_logging.flush(30)
    go.set()
    p.join(60)
    forksafe_logging.flush(30)
    with open("out.log", encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    stats = forksafe_logging.QueueListener().stats()
    report(exitcode=p.exitcode, pid=p.pid, text=text, fast=stats["fast_records"],
           records=stats["records"])
"""


@START_METHODS
@pytest.mark.timeout(120)
def test_the_file_is_the_same_with_and_without(scenario: Scenario, method: str) -> None:
    """What the record path writes, the fast path writes byte for byte (pid aside)."""
    texts = {}
    for fast in ("0", "1"):
        facts = scenario.run(SAME_FILE, None, args=[method, fast, FORMAT]).facts
        assert facts["exitcode"] == 0
        assert facts["records"] == 304
        if fast == "1":
            # The offer is read within 4 records (see _channel's CONFIRM_EVERY).
            assert facts["fast"] >= 296
        else:
            assert facts["fast"] == 0
        text = facts["text"].replace(str(facts["pid"]), "PID")
        # The traceback's and the stack's lines name this scenario's file.
        texts[fast] = text
    assert texts["1"] == texts["0"]
    assert texts["1"].count("|worker-1|app.worker|INFO|") == 301  # with "first"
    assert "KeyError: 'missing'" in texts["1"]
    assert "Stack (most recent call last):" in texts["1"]


CHANGE = """
import logging, multiprocessing, os, sys
import forksafe_logging
from scenario_lib import report

def work(warm, go, ready, changed, sent, again):
    log = logging.getLogger("app")
    log.info("before 0")
    warm.set()
    go.wait(30)  # the top has read it, and offered a plan
    for i in range(1, 200):
        log.info("before %d", i)
    ready.set()
    changed.wait(30)
    for i in range(200):
        log.info("after %d", i)
    sent.set()
    again.wait(30)  # the top has handled "after": its notices were sent by then
    for i in range(200):
        log.info("after %d", 200 + i)

if __name__ == "__main__":
    method, change = sys.argv[2], sys.argv[3]
    handler = logging.FileHandler("out.log", "w")
    handler.setFormatter(logging.Formatter("A|%(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    forksafe_logging.install()
    ctx = multiprocessing.get_context(method)
    warm, go, ready, changed, sent, again = [ctx.Event() for _ in range(6)]
    p = ctx.Process(target=work, args=(warm, go, ready, changed, sent, again))
    p.start()
    warm.wait(30)
    forksafe_logging.flush(30)
    go.set()
    ready.wait(30)
    forksafe_logging.flush(30)
    fast_before = forksafe_logging.QueueListener().stats()["fast_records"]
    # Changed in the top while the child runs; then the child is told.
    if change == "formatter":
        handler.setFormatter(logging.Formatter("B|%(message)s"))
    elif change == "handler":
        second = logging.FileHandler("second.log")
        second.setFormatter(logging.Formatter("B|%(message)s"))
        logging.getLogger("app").addHandler(second)
    elif change == "level":
        logging.getLogger("app").setLevel(logging.WARNING)
    elif change == "filter":
        handler.addFilter(lambda record: not record.getMessage().endswith("7"))
    changed.set()
    sent.wait(30)
    forksafe_logging.flush(30)
    fast_changed = forksafe_logging.QueueListener().stats()["fast_records"]
    again.set()
    p.join(60)
    forksafe_logging.flush(30)
    stats = forksafe_logging.QueueListener().stats()
    def read(name):
        try:
            with open(name) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []
    report(exitcode=p.exitcode, out=read("out.log"), second=read("second.log"),
           fast_before=fast_before, fast_changed=fast_changed, fast=stats["fast_records"],
           withdrawn=stats["plans_withdrawn"])
"""


@START_METHODS
@pytest.mark.parametrize("change", ["formatter", "handler", "level", "filter"])
@pytest.mark.timeout(120)
def test_a_change_in_the_top_reaches_children(scenario: Scenario, method: str, change: str) -> None:
    """No stale plan: what a child logs after the top changed its configuration follows it."""
    facts = scenario.run(CHANGE, None, args=[method, change]).facts
    assert facts["exitcode"] == 0
    # The plan was offered before "before 1" and read within 4 records.
    assert facts["fast_before"] >= 199 - 4
    before = ["A|before %d" % i for i in range(200)]
    out, second = facts["out"], facts["second"]
    assert out[:200] == before
    after = ["A|after %d" % i for i in range(400)]
    if change == "formatter":
        assert out[200:] == ["B|after %d" % i for i in range(400)]
    elif change == "handler":
        assert out[200:] == after
        assert second == ["B|after %d" % i for i in range(400)]
    elif change == "level":
        assert out[200:] == []
    elif change == "filter":
        assert out[200:] == [line for line in after if not line.endswith("7")]
    assert facts["withdrawn"] >= 1
    if change in ("formatter", "handler"):
        # A new plan was offered, and used within CONFIRM_EVERY (64) records.
        assert facts["fast"] - facts["fast_changed"] >= 200 - 64
    assert all(re.fullmatch(r"[AB]\|(before|after) \d+", line) for line in out + second)


NESTED = """
import logging, multiprocessing, sys
import forksafe_logging
from scenario_lib import report

class Chatty:
    def __str__(self):
        logging.getLogger("app.inner").info("formatting %d", 1)
        return "chatty"

def work(warm, go):
    log = logging.getLogger("app")
    log.info("first")
    warm.set()
    go.wait(30)
    for i in range(3):
        log.info("outer %d %s", i, Chatty())

if __name__ == "__main__":
    logging.basicConfig(filename="out.log", filemode="w", level=logging.INFO,
                        format="%(name)s|%(message)s")
    forksafe_logging.install()
    ctx = multiprocessing.get_context(sys.argv[2])
    warm, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=work, args=(warm, go))
    p.start()
    warm.wait(30)
    forksafe_logging.flush(30)
    go.set()
    p.join(60)
    forksafe_logging.flush(30)
    with open("out.log") as f:
        lines = f.read().splitlines()
    report(exitcode=p.exitcode, lines=lines,
           fast=forksafe_logging.QueueListener().stats()["fast_records"])
"""


@START_METHODS
@pytest.mark.timeout(120)
def test_an_argument_that_logs_as_it_is_formatted(scenario: Scenario, method: str) -> None:
    """The sender formats outside its lock: a record logged from an argument's __str__ is sent."""
    facts = scenario.run(NESTED, None, args=[method]).facts
    assert facts["exitcode"] == 0
    assert facts["fast"] >= 1  # the outer ones, formatted by the child
    lines = facts["lines"]
    outer = ["app|outer %d chatty" % i for i in range(3)]
    assert lines[0] == "app|first"
    assert [line for line in lines if line.startswith("app|outer")] == outer
    # Not dropped. (Made after its outer record, but sent before it: the
    # two may be written in either order.)
    assert lines.count("app.inner|formatting 1") == 3
    assert len(lines) == 7
