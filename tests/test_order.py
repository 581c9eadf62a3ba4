"""Causal order across processes: what happened before is written before.

A child's record is in the kernel when its logging call returns; whatever
the child then tells another process (a pool's result, a pipe) comes after
it, and so must every record that process logs next, in the top's file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from conftest import Scenario

pytestmark = pytest.mark.timeout(300)

METHODS = ["fork", "spawn", "forkserver"]

#: Rounds of the pool program: the issue's 200 rounds of 8 tasks found 531
#: of 1,600 task lines after their round's "done" under fork before the fix;
#: FORKSAFE_ORDER_ROUNDS=1000 runs the count the issue asks for.
ROUNDS = int(os.environ.get("FORKSAFE_ORDER_ROUNDS", "200"))
TASKS = 8

POOL = """
    import logging, multiprocessing, sys
    from scenario_lib import report, install_from_argv

    log = logging.getLogger("order")

    def task(job):
        log.info("task %d %d", *job)
        return job

    if __name__ == "__main__":
        install_from_argv()
        logging.basicConfig(filename="order.log", level=logging.INFO, format="%(message)s")
        method, rounds, tasks = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        with multiprocessing.get_context(method).Pool(4) as pool:
            for r in range(rounds):
                pool.map(task, [(r, i) for i in range(tasks)], chunksize=1)
                log.info("done %d", r)
            pool.close()
            pool.join()
        report(done=rounds)
"""


def pool_inversions(text: str, rounds: int, tasks: int) -> Tuple[List[Tuple[int, int]], int, int]:
    """(the tasks whose line is after their round's "done", lines missing, lines twice)."""
    done_at: Dict[int, int] = {}
    task_at: Dict[Tuple[int, int], List[int]] = {}
    for n, line in enumerate(text.splitlines()):
        m = re.fullmatch(r"done (\d+)", line)
        if m:
            done_at[int(m.group(1))] = n
            continue
        m = re.fullmatch(r"task (\d+) (\d+)", line)
        if m:
            task_at.setdefault((int(m.group(1)), int(m.group(2))), []).append(n)
    assert sorted(done_at) == list(range(rounds))
    late: List[Tuple[int, int]] = []
    missing = twice = 0
    for r in range(rounds):
        for i in range(tasks):
            seen = task_at.get((r, i), [])
            if not seen:
                missing += 1
                continue
            twice += len(seen) - 1
            if seen[0] > done_at[r]:
                late.append((r, i))
    return late, missing, twice


@pytest.mark.parametrize("method", METHODS)
def test_pool_round_trip(scenario: Scenario, method: str) -> None:
    """Workers log, return; the top logs "done": every task line comes before its "done"."""
    outcome = scenario.run(POOL, {}, args=[method, str(ROUNDS), str(TASKS)], timeout=280)
    assert outcome.returncode == 0, outcome.stderr
    text = (Path(scenario.tmp_path) / "order.log").read_text()
    late, missing, twice = pool_inversions(text, ROUNDS, TASKS)
    assert (late, missing, twice) == ([], 0, 0), text[:300]


THREADS = """
    import logging, multiprocessing, sys, threading
    from scenario_lib import report, install_from_argv

    log = logging.getLogger("order")

    def task(job):
        log.info("task %d %d", *job)
        return job

    if __name__ == "__main__":
        install_from_argv()
        logging.basicConfig(filename="order.log", level=logging.INFO, format="%(message)s")
        method, rounds = sys.argv[2], int(sys.argv[3])
        errors = []

        def caller(pool, t):
            try:
                for r in range(rounds):
                    pool.apply(task, ((t, r),))
                    log.info("done %d %d", t, r)
            except BaseException as exc:
                errors.append(repr(exc))

        with multiprocessing.get_context(method).Pool(4) as pool:
            threads = [threading.Thread(target=caller, args=(pool, t)) for t in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            pool.close()
            pool.join()
        report(errors=errors)
"""


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_top_threads_at_once(scenario: Scenario, method: str) -> None:
    """Four threads of the top wait their turn at once (they share one look at the children)."""
    rounds = ROUNDS
    outcome = scenario.run(THREADS, {}, args=[method, str(rounds)], timeout=280)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.facts["errors"] == []
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = (Path(scenario.tmp_path) / "order.log").read_text().splitlines()
    position = {line: n for n, line in enumerate(lines)}
    assert len(position) == len(lines) == 2 * 4 * rounds
    late = [
        (t, r)
        for t in range(4)
        for r in range(rounds)
        if position["task %d %d" % (t, r)] > position["done %d %d" % (t, r)]
    ]
    assert late == []


RELAY = """
    import logging, multiprocessing, os, sys
    from scenario_lib import report, install_from_argv

    log = logging.getLogger("relay")

    def first(conn, n):
        for i in range(n):
            log.info("a %d", i)
            conn.send(i)  # after the logging call returned
        conn.close()

    def second(conn, n):
        for _ in range(n):
            log.info("b %d", conn.recv())

    if __name__ == "__main__":
        install_from_argv()
        logging.basicConfig(filename="relay.log", level=logging.INFO, format="%(message)s")
        method, n = sys.argv[2], int(sys.argv[3])
        ctx = multiprocessing.get_context(method)
        recv_end, send_end = ctx.Pipe(duplex=False)
        a = ctx.Process(target=first, args=(send_end, n))
        b = ctx.Process(target=second, args=(recv_end, n))
        b.start()
        a.start()
        a.join(120)
        b.join(120)
        report(codes=[a.exitcode, b.exitcode])
"""


@pytest.mark.parametrize("method", METHODS)
def test_between_siblings(scenario: Scenario, method: str) -> None:
    """A child logs, then tells a sibling through a pipe; the sibling's line comes after."""
    n = 2000
    outcome = scenario.run(RELAY, {}, args=[method, str(n)], timeout=280)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.facts["codes"] == [0, 0]
    lines = (Path(scenario.tmp_path) / "relay.log").read_text().splitlines()
    where = {line: n for n, line in enumerate(lines)}
    assert len(where) == len(lines) == 2 * n
    late = [i for i in range(n) if where["b %d" % i] < where["a %d" % i]]
    assert late == []


STUCK = """
    import logging, os, sys, time
    from scenario_lib import Stuck, child, report, install_from_argv
    import forksafe_logging

    install_from_argv()
    stuck = Stuck()
    blocked = logging.getLogger("blocked")
    blocked.addHandler(stuck)
    blocked.propagate = False
    logging.basicConfig(filename="top.log", level=logging.INFO, format="%(message)s")

    def in_child():
        blocked.warning("holds the listener")
        logging.getLogger("free").warning("queued behind it")

    outcome = child(in_child, timeout=30)
    if not stuck.entered.wait(30):
        raise SystemExit("the listener never reached the stuck handler")
    top = logging.getLogger("top")
    started = time.monotonic()
    top.warning("first")
    first = time.monotonic() - started
    started = time.monotonic()
    for i in range(20):
        top.warning("next %d", i)
    rest = time.monotonic() - started
    expired = forksafe_logging.QueueListener().stats()["order_waits_expired"]
    stuck.gate.set()
    report(child=outcome, first=first, rest=rest, expired=expired)
"""


@pytest.mark.parametrize("wait", [None, 0.3, 0])
def test_stuck_listener_bounds_the_wait(scenario: Scenario, wait: Optional[float]) -> None:
    """A handler that never returns holds the listener: the top waits once, order_wait at most."""
    from forksafe_logging._turns import ORDER_WAIT

    options = {} if wait is None else {"order_wait": wait}
    bound = ORDER_WAIT if wait is None else wait
    facts = scenario.run(STUCK, options, timeout=120).facts
    assert facts["child"] == "ok"
    # Bounds, not speeds: without them the top would wait for ever (the
    # handler waits 60 s), or the bound for each of the 20 records.
    assert facts["first"] < bound + 5
    assert facts["rest"] < max(bound, 0.3)
    if bound:
        assert facts["first"] >= bound - 0.1
        assert facts["expired"] == 1
    else:
        assert facts["expired"] == 0


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_order_wait_checked(value: object, error: type) -> None:
    """A bad order_wait is refused, naming the argument, before anything is installed."""
    import forksafe_logging

    with pytest.raises(error, match="order_wait"):
        forksafe_logging.install(order_wait=value)  # type: ignore[arg-type]


NESTED = """
    import logging, time
    from scenario_lib import Behind, report, install_from_argv
    import forksafe_logging

    install_from_argv()
    logging.basicConfig(filename="top.log", level=logging.INFO, format="%(message)s")
    kid = Behind("kid")
    took = []

    class Chatty(logging.Handler):
        # Logs from inside emit(), holding its own lock, which the listener
        # needs for the child's "behind" record: in the top's thread while
        # that record is surely behind, and in the listener's thread.
        def emit(self, record):
            message = record.getMessage()
            if message == "outer":
                kid.send_behind()
                started = time.monotonic()
                logging.getLogger("nested").info("nested in the top")
                took.append(time.monotonic() - started)
            elif message == "behind":
                logging.getLogger("nested").info("nested in the listener")

    def note(record):
        # A handler's filter runs outside the handler's lock.
        if record.getMessage() == "behind":
            logging.getLogger("nested").info("filtered in the listener")
        return True

    chatty = Chatty()
    chatty.addFilter(note)
    logging.getLogger().addHandler(chatty)
    listener = forksafe_logging.QueueListener()
    kid.hello_sent()
    listener.flush(30)  # "hello" handled: a child is connected from now on
    logging.getLogger("top").info("outer")
    kid.finish()
    listener.flush(30)
    report(took=took[0], expired=listener.stats()["order_waits_expired"])
"""


def test_logging_from_inside_a_handler_never_waits(scenario: Scenario) -> None:
    """A record logged from inside a handler goes at once, in the top's threads and the listener's.

    It must not wait its turn behind a child's record that the listener can
    only dispatch once that handler returns.
    """
    from forksafe_logging._turns import ORDER_WAIT

    facts = scenario.run(NESTED, {}, timeout=120).facts
    assert facts["expired"] == 0
    assert facts["took"] < ORDER_WAIT  # a bound: waiting would last ORDER_WAIT
    lines = (Path(scenario.tmp_path) / "top.log").read_text().splitlines()
    # "behind" may come before or after "nested in the top": the listener
    # writes it to the FileHandler, ahead of Chatty, as soon as it reads it.
    assert sorted(lines) == sorted(
        [
            "hello",
            "outer",
            "nested in the top",
            "behind",
            "filtered in the listener",
            "nested in the listener",
        ]
    )
    assert lines[:2] == ["hello", "outer"]
    assert lines.index("nested in the top") > lines.index("outer")
    assert lines.index("behind") < lines.index("filtered in the listener")
    assert lines.index("filtered in the listener") < lines.index("nested in the listener")


UNLISTED = """
    import logging, logging.config, sys, threading, time
    from scenario_lib import Behind, report, install_from_argv
    import forksafe_logging

    variant = sys.argv[2]
    install_from_argv()
    logging.basicConfig(filename="top.log", level=logging.INFO, format="%(name)s %(message)s")

    class Chatty(logging.Handler):
        if variant == "lock":
            def createLock(self):
                self.lock = threading.Lock()  # cannot say which thread holds it

        def emit(self, record):
            if record.getMessage() == "outer":
                kid.send_behind()
                started = time.monotonic()
                logging.getLogger("nested").info("nested in the top")
                took.append(time.monotonic() - started)

    took = []
    logging.getLogger("shared").addHandler(Chatty())
    if variant == "dictconfig":
        # Configures the root only: "shared" keeps its Chatty, which
        # dictConfig takes out of logging's list of handlers.
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(name)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": "top.log",
                                  "formatter": "plain"}},
            "root": {"level": "INFO", "handlers": ["file"]},
        })
    kid = Behind("shared.kid")
    listener = forksafe_logging.QueueListener()
    kid.hello_sent()
    listener.flush(30)
    logging.getLogger("shared.top").info("outer")
    kid.finish()
    listener.flush(30)
    report(took=took[0], expired=listener.stats()["order_waits_expired"])
"""


@pytest.mark.parametrize("variant", ["lock", "dictconfig"])
def test_inside_an_unlisted_handler_never_waits(scenario: Scenario, variant: str) -> None:
    """Also from a handler whose lock is a plain Lock, or that only a logger still holds.

    ``dictConfig`` drops the handlers it replaces from logging's list, while
    loggers it leaves alone (``disable_existing_loggers=False``, as Django
    configures) keep using them.
    """
    from forksafe_logging._turns import ORDER_WAIT

    facts = scenario.run(UNLISTED, {}, args=[variant], timeout=120).facts
    assert facts["expired"] == 0
    assert facts["took"] < ORDER_WAIT  # a bound: waiting would last ORDER_WAIT
    lines = (Path(scenario.tmp_path) / "top.log").read_text().splitlines()
    assert sorted(lines) == sorted(
        ["shared.kid hello", "shared.top outer", "nested nested in the top", "shared.kid behind"]
    )
