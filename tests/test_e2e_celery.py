"""End to end: a Celery worker with a prefork pool, running tasks that log.

The worker runs as users run it, ``python -m celery -A tasks worker``, in a
process group of its own. Its broker is kombu's ``filesystem://`` transport:
it needs no server, and unlike ``memory://`` (which lives in one process) it
lets the tasks be sent from another process, as a real client sends them.
The tasks are queued first, then the worker starts, runs them in two pool
processes that billiard forks (and replaces every few tasks), and is stopped
with SIGTERM, Celery's warm shutdown.

``install()`` runs in the worker's main process, the parent of the pool
processes, in one of the two places the recipe (docs/recipes/celery.md)
gives: a ``worker_init`` receiver, with Celery configuring logging itself; or
the ``setup_logging`` receiver that replaces Celery's logging configuration.
A handler of the main process stamps the pid of the process that writes each
line: every task's records must be written there, by the main process, once.
Without ``install()``, each pool process writes through the handlers it
inherited, so the test fails.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import PACKAGE_HOME

pytestmark = pytest.mark.timeout(150)

TASKS = 40
#: Celery's --max-tasks-per-child: pool processes are replaced as they go.
MAX_TASKS_PER_CHILD = 5

APP = """
import logging, os
from celery import Celery, signals
from celery.utils.log import get_task_logger
import forksafe_logging

BROKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "broker")
PLACEMENT = os.environ["PLACEMENT"]

app = Celery("tasks", broker="filesystem://")
app.conf.broker_transport_options = {
    "data_folder_in": BROKER, "data_folder_out": BROKER, "polling_interval": 0.05,
}
log = get_task_logger(__name__)


def stamp(record):
    record.writer = os.getpid()
    return True


def top_handler():
    handler = logging.FileHandler("top.log")
    handler.addFilter(stamp)
    handler.setFormatter(logging.Formatter("%(writer)d|%(process)d|%(name)s|%(message)s"))
    return handler


if PLACEMENT == "worker_init":
    # Celery configures logging (and takes over the root logger); the
    # checking handler joins its handlers on the root and task loggers.
    @signals.worker_init.connect
    def install_forksafe_logging(**kwargs):
        forksafe_logging.install()

    @signals.after_setup_logger.connect
    @signals.after_setup_task_logger.connect
    def add_top_handler(logger, **kwargs):
        logger.addHandler(top_handler())

else:
    # This receiver replaces Celery's logging set-up altogether.
    @signals.setup_logging.connect
    def configure_logging(**kwargs):
        logging.root.addHandler(top_handler())
        logging.root.setLevel(logging.INFO)
        forksafe_logging.install()


@app.task
def work(n):
    log.info("task %d", n)
    logging.getLogger("plain").info("plain %d", n)
"""

SEND = """
import sys
from tasks import work

for n in range(int(sys.argv[1])):
    work.delay(n)
"""


def _environment(tmp_path: Path, placement: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(PACKAGE_HOME)])
    env["PLACEMENT"] = placement
    return env


def _records(path: Path) -> List[List[str]]:
    if not path.exists():
        return []
    # A line being written may be cut short: only whole lines count.
    text = path.read_text()
    return [line.split("|", 3) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _wait_for(path: Path, count: int, worker: subprocess.Popen[str], deadline: float) -> None:
    """Poll the log until ``count`` task lines are in it, the worker ends, or time is up."""
    while time.monotonic() < deadline and worker.poll() is None:
        if sum(1 for r in _records(path) if r[2] in ("tasks", "plain")) >= count:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("placement", ["worker_init", "setup_logging"])
def test_celery_prefork_worker(tmp_path: Path, placement: str) -> None:
    """Every task's records reach the worker's main process once, with pool processes replaced."""
    if importlib.util.find_spec("celery") is None:
        pytest.skip("Celery is not installed (pip install forksafe_logging[e2e])")
    (tmp_path / "tasks.py").write_text(textwrap.dedent(APP))
    (tmp_path / "send.py").write_text(textwrap.dedent(SEND))
    (tmp_path / "broker").mkdir()
    env = _environment(tmp_path, placement)
    sent = subprocess.run(
        [sys.executable, "send.py", str(TASKS)],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    command = [
        sys.executable, "-m", "celery", "-A", "tasks", "worker",
        "--pool", "prefork", "--concurrency", "2",
        "--max-tasks-per-child", str(MAX_TASKS_PER_CHILD),
        "--loglevel", "INFO", "--logfile", "celery.log",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    worker = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(tmp_path / "top.log", 2 * TASKS, worker, time.monotonic() + 60)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.communicate()
    assert worker.returncode == 0, output
    records = [r for r in _records(tmp_path / "top.log") if r[2] in ("tasks", "plain")]
    counts = collections.Counter(r[3].strip() for r in records)
    expected = {"%s %d" % (kind, n): 1 for kind in ("task", "plain") for n in range(TASKS)}
    assert counts == expected, output
    writers = {int(r[0]) for r in records}
    assert writers == {worker.pid}
    pool = {int(r[1]) for r in records}
    assert worker.pid not in pool
    # The pool processes were replaced along the way, and each new one joined.
    assert len(pool) >= TASKS // MAX_TASKS_PER_CHILD
    print("pool processes that ran tasks:", len(pool))
