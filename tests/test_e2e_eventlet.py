"""End to end: eventlet's ``monkey_patch()``, greenthreads that log, ``install()``.

With the real eventlet. The order that works is gunicorn's eventlet worker's:
the top process imports the package and calls ``install()`` unpatched, and
each child calls ``eventlet.monkey_patch()`` first thing, then logs from
several greenthreads at once. The top's file handler has a filter that
stamps the pid of the process that writes the line: every record of every
greenthread must be there once, written by the top, each greenthread's in
its order. Without the library, forked children write through the inherited
handler themselves and spawned ones write nowhere: the first test fails
without it.

A top process patched before ``install()`` is not supported:
``monkey_patch()`` deletes ``select.poll`` and ``selectors.PollSelector``,
which the package needs, and makes the listener's thread a greenthread,
which would block the process's one OS thread in ``poll()``. The last tests
check that the import, ``install()`` and a ``QueueHandler`` then say so,
and what to do, rather than fail with an ``AttributeError`` or hang.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Dict, List

import pytest
from conftest import START_METHODS, Scenario

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("eventlet") is None,
        reason="eventlet is not installed: pip install '.[e2e]'",
    ),
    pytest.mark.timeout(60),
]

CHILDREN, GREEN, RECORDS = 2, 4, 30

#: Logging, and the facts: the lines of out.log as (writer, process, message).
PRELUDE = """
    import json, logging, multiprocessing, os, sys
    import forksafe_logging
    from scenario_lib import report, writer_file_handler

    def configure():
        logging.root.addHandler(writer_file_handler("out.log"))
        logging.root.setLevel(logging.INFO)

    def lines():
        forksafe_logging.flush(30)
        with open("out.log") as f:
            return [line.split("|", 2) for line in f.read().splitlines()]
"""

GREENTHREADS = (
    PRELUDE
    + """
    GREEN, RECORDS = int(sys.argv[3]), int(sys.argv[4])

    def green_logging(who):
        import eventlet

        def one(g):
            log = logging.getLogger("app")
            for i in range(RECORDS):
                log.info("%s %d %d", who, g, i)
                eventlet.sleep(0)  # the other greenthreads log in between

        pool = eventlet.GreenPool()
        for g in range(GREEN):
            pool.spawn(one, g)
        pool.waitall()

    def child(n):
        import eventlet

        eventlet.monkey_patch()  # first thing, as gunicorn's eventlet worker does
        green_logging("child%d" % n)

    if __name__ == "__main__":
        configure()
        if json.loads(sys.argv[1]) is not None:
            forksafe_logging.install()
        context = multiprocessing.get_context(sys.argv[2])
        children = [context.Process(target=child, args=(n,)) for n in range(int(sys.argv[5]))]
        for process in children:
            process.start()
        green_logging("top")  # greenthreads of the top, unpatched, meanwhile
        for process in children:
            process.join(30)
        report(top=os.getpid(), exitcodes=[p.exitcode for p in children], lines=lines())
"""
)


def _expected(who: List[str]) -> List[str]:
    return sorted("%s %d %d" % (w, g, i) for w in who for g in range(GREEN) for i in range(RECORDS))


@START_METHODS
def test_patched_children_log_from_greenthreads(scenario: Scenario, method: str) -> None:
    """Each greenthread's records once, in order, written by the top; no logging error."""
    outcome = scenario.run(
        GREENTHREADS, {}, args=[method, str(GREEN), str(RECORDS), str(CHILDREN)], timeout=40
    )
    facts: Dict[str, Any] = outcome.facts
    assert "Logging error" not in outcome.stderr, outcome.stderr
    assert facts["exitcodes"] == [0] * CHILDREN
    lines = facts["lines"]
    who = ["top"] + ["child%d" % n for n in range(CHILDREN)]
    assert sorted(message for _, _, message in lines) == _expected(who)
    assert {writer for writer, _, _ in lines} == {str(facts["top"])}
    by_greenthread: Dict[str, List[int]] = {}
    for _, process, message in lines:
        name, g, i = message.split()
        by_greenthread.setdefault("%s %s" % (name, g), []).append(int(i))
        # Each child's records came from its own process.
        assert (process == str(facts["top"])) == (name == "top"), (process, message)
    assert all(seq == list(range(RECORDS)) for seq in by_greenthread.values()), by_greenthread
    # The greenthreads did log in between each other, in every process: the
    # second record of a process is not its first greenthread's second.
    for name in who:
        mine = [message.split()[1] for _, _, message in lines if message.split()[0] == name]
        assert len(set(mine[:GREEN])) == GREEN, (name, mine[: 2 * GREEN])


BACKOFF = (
    PRELUDE
    + """
    import time
    from forksafe_logging import _channel
    from scenario_lib import child

    def patched_child():
        import eventlet

        eventlet.monkey_patch()
        log = logging.getLogger("app")
        log.info("first")
        # What a listener whose backlog was full leaves a sender: no
        # connection, and a pause before it connects again, taken with the
        # connection's lock held.
        ch = _channel.channel()
        ch._retire()
        ch.backoff.at = time.monotonic() + 0.2
        pool = eventlet.GreenPool()
        for g in range(int(sys.argv[2])):
            pool.spawn(log.info, "green %d", g)
        pool.waitall()
        log.info("last")

    if __name__ == "__main__":
        configure()
        forksafe_logging.install()
        ended = child(patched_child, timeout=20)
        report(top=os.getpid(), ended=ended, lines=lines())
"""
)


def test_greenthreads_wait_out_a_backoff_in_turn(scenario: Scenario) -> None:
    """Greenthreads logging while a sender waits to reconnect: no lock taken over, no error.

    eventlet leaves the connection's lock a real ``RLock``, which every
    greenthread of the (single-threaded) process holds as one. The pause
    before a new connection used to be ``time.sleep``, looked up when called:
    eventlet's, which let the next greenthread in; it took the lock as one
    cut off by a signal, and the first one's release raised ``RuntimeError``.
    """
    outcome = scenario.run(BACKOFF, {}, args=[str(GREEN)], timeout=30)
    facts: Dict[str, Any] = outcome.facts
    assert "Logging error" not in outcome.stderr, outcome.stderr
    assert facts["ended"] == "ok"
    messages = ["first", *("green %d" % g for g in range(GREEN)), "last"]
    assert [message for _, _, message in facts["lines"]] == messages
    assert {writer for writer, _, _ in facts["lines"]} == {str(facts["top"])}


PATCHED_FIRST = """
    import eventlet

    eventlet.monkey_patch()
    import forksafe_logging
"""

PATCHED_BEFORE_INSTALL = """
    import logging, sys
    import forksafe_logging
    import eventlet

    eventlet.monkey_patch()
    logging.basicConfig(filename="out.log")
    try:
        if sys.argv[2] == "install":
            forksafe_logging.install()
        else:
            forksafe_logging.QueueHandler([logging.root.handlers[0]])
    except RuntimeError as exc:
        print("refused:", exc)
    else:
        print("started")
"""

#: What the refusal says: that it is eventlet, and the order that works.
WHY = "eventlet.monkey_patch() has patched"
WHAT_TO_DO = "call eventlet.monkey_patch() in the child processes only"


def test_top_patched_before_the_import_is_refused_clearly(scenario: Scenario) -> None:
    """eventlet deletes select.poll: the import says so, instead of an AttributeError."""
    outcome = scenario.run(PATCHED_FIRST, None, timeout=30)
    assert outcome.returncode not in (0, None), outcome.stdout
    assert "ImportError: " + "forksafe_logging cannot run its listener" in outcome.stderr
    assert WHY in outcome.stderr
    assert WHAT_TO_DO in outcome.stderr


@pytest.mark.parametrize("start", ["install", "QueueHandler"])
def test_top_patched_before_install_is_refused_clearly(scenario: Scenario, start: str) -> None:
    """A listener started after the patch would block the process's one OS thread: refused."""
    outcome = scenario.run(PATCHED_BEFORE_INSTALL, None, timeout=30, args=[start])
    assert not outcome.hung, "hung: %s" % outcome.stderr
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.startswith("refused: forksafe_logging cannot run its listener")
    assert WHY in outcome.stdout
    assert WHAT_TO_DO in outcome.stdout
