"""End to end: the process pools people use, running tasks that log, after ``install()``.

``concurrent.futures.ProcessPoolExecutor`` (every start method, and workers
replaced after a few tasks) and billiard's ``Pool``, the engine of Celery's
prefork workers. tests/test_transport.py covers ``multiprocessing.Process``
and the transport's own guarantees; here the pool starts, feeds and retires
the workers, as in a program.

Each scenario logs through a file handler in the top process whose filter
stamps the pid of the process that writes the line: every task's record must
be written there, by the top process, once, and each worker's records in the
order that worker logged them. Without the library, workers forked by a pool
write through the inherited handler themselves, and spawned ones write
nowhere, so each of these tests fails without it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from typing import Any, Dict, Optional

import pytest
from conftest import Scenario

pytestmark = pytest.mark.timeout(150)

TASKS = 24
RECORDS = 50

#: The top of every scenario: the stamping file handler, the task, the checks.
PRELUDE = """
import collections, json, logging, os, sys
import forksafe_logging
from scenario_lib import report, writer_file_handler

TASKS, RECORDS = int(sys.argv[2]), int(sys.argv[3])
#: Records this worker process has logged so far, over all its tasks.
logged_here = 0

def task(n):
    global logged_here
    log = logging.getLogger("task")
    for i in range(RECORDS):
        log.info("%d %d %d", n, i, logged_here)
        logged_here += 1
    return os.getpid()

def configure():
    logging.root.addHandler(writer_file_handler("out.log"))
    logging.root.setLevel(logging.INFO)
    forksafe_logging.install()

def facts(worker_pids):
    forksafe_logging.flush(30)
    writers, counts, order = set(), collections.Counter(), collections.defaultdict(list)
    with open("out.log") as f:
        for line in f.read().splitlines():
            writer, process, message = line.split("|")
            n, i, sequence = message.split()
            writers.add(int(writer))
            counts["%s %s" % (n, i)] += 1
            order[process].append(int(sequence))
    return dict(top=os.getpid(), writers=sorted(writers), counts=counts,
                order=order, worker_pids=sorted(set(worker_pids)))
"""


def check(facts: Dict[str, Any], fresh_globals: bool = False) -> None:
    """Every task's every record once, written by the top, in each worker's order.

    ``fresh_globals``: each batch of tasks runs with the module's globals anew
    (loky pickles a function of ``__main__`` by value, once per batch), so a
    worker's count of its records starts again at 0 now and then; in between
    it still goes up by one.
    """
    expected = {"%d %d" % (n, i): 1 for n in range(TASKS) for i in range(RECORDS)}
    assert facts["counts"] == expected
    assert facts["writers"] == [facts["top"]]
    workers = facts["worker_pids"]
    assert facts["top"] not in workers
    assert sorted(int(pid) for pid in facts["order"]) == workers
    for pid, sequence in facts["order"].items():
        if fresh_globals:
            in_order = all(n in (0, before + 1) for before, n in zip([-1, *sequence], sequence))
        else:
            in_order = sequence == list(range(len(sequence)))
        assert in_order, "records of %s out of order: %s" % (pid, sequence)


FUTURES = (
    PRELUDE
    + """
import concurrent.futures, multiprocessing

if __name__ == "__main__":
    configure()
    method, max_tasks = sys.argv[4], json.loads(sys.argv[5])
    options = {} if max_tasks is None else {"max_tasks_per_child": max_tasks}
    with concurrent.futures.ProcessPoolExecutor(
        2, mp_context=multiprocessing.get_context(method), **options
    ) as executor:
        pids = list(executor.map(task, range(TASKS)))
    report(**facts(pids))
"""
)

#: (start method, max_tasks_per_child). ``max_tasks_per_child`` is refused
#: with the fork start method, hence no such pair. Only 1: with a larger
#: value and a backlog of tasks, the executor itself stops replacing workers
#: and hangs, with or without this library (CPython gh-115634; 3.11 to 3.13
#: as installed here).
EXECUTOR_CASES = [
    ("fork", None),
    ("spawn", None),
    ("forkserver", None),
    ("spawn", 1),
    ("forkserver", 1),
]


@pytest.mark.parametrize(("method", "max_tasks"), EXECUTOR_CASES)
def test_process_pool_executor(scenario: Scenario, method: str, max_tasks: Optional[int]) -> None:
    """ProcessPoolExecutor workers' records reach the top's handler once, in order."""
    if max_tasks is not None and sys.version_info < (3, 11):
        pytest.skip("ProcessPoolExecutor(max_tasks_per_child=...) is new in Python 3.11")
    args = [str(TASKS), str(RECORDS), method, json.dumps(max_tasks)]
    facts = scenario.run(FUTURES, None, args=args, timeout=120).facts
    check(facts)
    if max_tasks is not None:
        # Workers were replaced: each did at most max_tasks tasks.
        assert len(facts["worker_pids"]) >= TASKS // max_tasks


def _billiard(spawn_or_replacing: bool = False) -> None:
    if importlib.util.find_spec("billiard") is None:
        pytest.skip("billiard is not installed (pip install forksafe_logging[e2e])")
    version = importlib.metadata.version("billiard")
    if spawn_or_replacing and tuple(int(p) for p in version.split(".")[:2]) < (4, 3):
        # 4.2.4 is the newest billiard that Python 3.9 gets.
        pytest.skip(
            "billiard %s itself fails here, with or without this library: its spawn "
            "workers cannot find the task ('Can't get attribute ... on <module '__main__' "
            "(built-in)>') and a worker with maxtasksperchild dies ('Worker exited "
            "prematurely: exitcode 155'); 4.3.2 works" % version
        )


BILLIARD = (
    PRELUDE
    + """
def join_tree():
    # What billiard spawn workers need when billiard is imported after
    # install(): join the tree like a subprocess does, with the levels
    # their records need.
    logging.root.setLevel(logging.INFO)
    forksafe_logging.attach()

if __name__ == "__main__":
    method, max_tasks = sys.argv[4], json.loads(sys.argv[5])
    order, attach = sys.argv[6], sys.argv[7] == "attach"
    if order == "early":
        import billiard
    configure()
    if order == "late":
        import billiard
    context = billiard.get_context(method)
    with context.Pool(2, maxtasksperchild=max_tasks,
                      initializer=join_tree if attach else None) as pool:
        pids = pool.map(task, range(TASKS), chunksize=1)
    report(**facts(pids))
"""
)


@pytest.mark.parametrize(
    ("method", "max_tasks", "order", "attach"),
    [
        ("fork", None, "early", "-"),
        ("fork", 3, "early", "-"),
        ("spawn", None, "early", "-"),
        ("spawn", 3, "early", "-"),
        ("spawn", None, "late", "attach"),
    ],
)
def test_billiard_pool(
    scenario: Scenario, method: str, max_tasks: Optional[int], order: str, attach: str
) -> None:
    """billiard's Pool: workers join by themselves; imported after install(), with attach()."""
    _billiard(spawn_or_replacing=method == "spawn" or max_tasks is not None)
    args = [str(TASKS), str(RECORDS), method, json.dumps(max_tasks), order, attach]
    facts = scenario.run(BILLIARD, None, args=args, timeout=120).facts
    check(facts)
    if max_tasks is not None:
        assert len(facts["worker_pids"]) >= TASKS // max_tasks


def test_billiard_imported_late_spawn_needs_attach(scenario: Scenario) -> None:
    """billiard imported after install(): its spawn workers log nothing to the top by themselves.

    install() puts what attaches a spawn child into the config of the process
    objects of ``multiprocessing``, and of billiard if it is imported by then.
    """
    _billiard(spawn_or_replacing=True)
    args = [str(TASKS), str(RECORDS), "spawn", "null", "late", "-"]
    facts = scenario.run(BILLIARD, None, args=args, timeout=120).facts
    assert facts["worker_pids"]
    assert facts["counts"] == {}


JOBLIB = (
    PRELUDE
    + """
import joblib

if __name__ == "__main__":
    configure()
    backend = sys.argv[4]
    pids = joblib.Parallel(n_jobs=4, backend=backend)(
        joblib.delayed(task)(n) for n in range(TASKS)
    )
    report(**facts(pids))
"""
)


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_joblib_parallel(scenario: Scenario, backend: str) -> None:
    """joblib's Parallel(n_jobs=4): loky's workers (a new interpreter each) and multiprocessing's.

    As the recipe in docs/recipes shows: ``install()`` in the top, nothing in the tasks.
    """
    if importlib.util.find_spec("joblib") is None:
        pytest.skip("joblib is not installed (pip install forksafe_logging[e2e])")
    args = [str(TASKS), str(RECORDS), backend]
    facts = scenario.run(JOBLIB, None, args=args, timeout=120).facts
    check(facts, fresh_globals=backend == "loky")
