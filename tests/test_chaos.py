"""Fault injection across a whole tree: kills and signals at random points.

Each run starts a top process with ``install()``, three forked children and
a grandchild under each: six workers that log records of random sizes
(up to 20 kB, more than a socket buffer holds at once) while a timer
raises an exception in them every few milliseconds, mid-send as often as
not (as Celery's soft time limit or ``signal.alarm`` timeouts do). The top
SIGKILLs two workers at random moments; in every third run this test
SIGKILLs the top too.

Each worker keeps a ledger (unbuffered writes) of which logging calls
returned. Checked, every run:

- no worker is blocked: the whole tree has exited within BOUND seconds
  (the listener is alive and drains, or it is dead and senders fall back);
- with the top alive, every record whose call returned is in the file or on
  its sender's stderr, none of them in both, and none in the file twice;
- with the top killed, every record of a worker that outlived the top is in
  the file or on the worker's stderr (the top never confirmed it), none in
  the file twice. A worker killed, or ended, before the top died had nobody
  left to show what the top had not handled yet: the documented limit.

``make stress`` runs FORKSAFE_STRESS_RUNS / 3 runs (166); the test command
runs 10 (FORKSAFE_CHAOS_RUNS sets it).
"""

from __future__ import annotations

import os
import random
import re
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Set

import pytest
from conftest import PACKAGE_HOME, TESTS

from forksafe_logging import _ring

RUNS = int(
    os.environ.get("FORKSAFE_CHAOS_RUNS", int(os.environ.get("FORKSAFE_STRESS_RUNS", "30")) // 3)
)
#: Seconds within which the whole tree must have exited.
BOUND = 60
WORKERS = 6
RECORDS = 1500

TOP = """
import logging, os, random, select, signal, sys, time
import forksafe_logging

seed, records = int(sys.argv[1]), int(sys.argv[2])
logging.basicConfig(filename="out.log", level=logging.INFO, format="%(message)s")
forksafe_logging.install()
log = logging.getLogger("chaos")


class Interrupted(BaseException):
    pass


armed = [False]


def interrupt(signum, frame):
    # Disarmed first: one exception per call (a second timer tick would
    # otherwise land in the first one's handling).
    if armed[0]:
        armed[0] = False
        raise Interrupted()


def worker(slot, pids_w):
    fd = os.open("err-%d.log" % slot, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    ledger = os.open("ledger-%d" % slot, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rng = random.Random(seed * 100 + slot)
    signal.signal(signal.SIGALRM, interrupt)
    period = rng.uniform(0.001, 0.01)
    signal.setitimer(signal.ITIMER_REAL, period, period)
    os.write(pids_w, b"%d %d\\n" % (slot, os.getpid()))
    os.close(pids_w)  # the top reads to EOF: every worker has started
    for i in range(records):
        ok = False
        try:
            # Only the logging call is interrupted: the ledger must be true.
            armed[0] = True
            log.info("w %d %d %s", slot, i, "x" * rng.choice((0, 10, 100, 1000, 20000)))
            armed[0] = False
            ok = True
        except Interrupted:
            armed[0] = False
        os.write(ledger, b"%s %d\\n" % (b"ok" if ok else b"int", i))
    signal.setitimer(signal.ITIMER_REAL, 0)
    os.write(ledger, b"end %d\\n" % top_dead())


def top_dead():
    # A zombie: this test has not reaped it yet.
    try:
        with open("/proc/%d/stat" % TOP) as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


TOP = os.getpid()
pids_r, pids_w = os.pipe()
gone_r, gone_w = os.pipe()  # EOF once every worker has exited, killed or not
for c in range(WORKERS // 2):
    if os.fork() == 0:
        os.close(pids_r)
        os.close(gone_r)
        # sys.exit(), not os._exit(): a worker that outlived the top shows at
        # its exit what the top never confirmed (its atexit hook), whether or
        # not it logged again after the top died.
        if os.fork() == 0:
            worker(2 * c + 1, pids_w)
            sys.exit(0)
        worker(2 * c, pids_w)
        sys.exit(0)
os.close(pids_w)
os.close(gone_w)
pids = {}
with os.fdopen(pids_r) as lines:
    for line in lines:  # to EOF: every worker has written its line, or died
        slot, pid = map(int, line.split())
        pids[slot] = pid
print("ready %s" % " ".join(str(pids[s]) for s in sorted(pids)), flush=True)
rng = random.Random(seed)
for slot in rng.sample(sorted(pids), 2):
    time.sleep(rng.uniform(0, 0.05))  # chaos: a random moment, not a synchronization
    try:
        os.kill(pids[slot], signal.SIGKILL)
    except ProcessLookupError:
        pass
    log.warning("killed worker %d", slot)
ready, _, _ = select.select([gone_r], [], [], BOUND)
while True:  # reap the children (grandchildren are orphans: not ours)
    try:
        if os.waitpid(-1, 0)[0] == 0:
            break
    except ChildProcessError:
        break
if not ready:
    print("blocked", flush=True)
else:
    forksafe_logging.flush(10)
    stats = forksafe_logging.QueueListener().stats()
    print("all exited, %d records on the fast path, %d rings"
          % (stats["fast_records"], stats["rings"]), flush=True)
""".replace("WORKERS", str(WORKERS)).replace("BOUND", str(BOUND))


def _ledger(path: Path) -> Dict[str, List[int]]:
    got: Dict[str, List[int]] = {"ok": [], "int": [], "end": []}
    if path.exists():
        for line in path.read_text().splitlines():
            kind, _, number = line.partition(" ")
            got[kind].append(int(number) if number else 0)
    return got


@pytest.mark.stress
@pytest.mark.timeout(BOUND + 60)
@pytest.mark.parametrize("run", range(RUNS))
def test_chaos(tmp_path: Path, run: int) -> None:
    """Kills and mid-send exceptions at random: no worker blocked, nothing lost uncounted."""
    kill_top = run % 3 == 2
    script = tmp_path / "top.py"
    script.write_text(textwrap.dedent(TOP))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(PACKAGE_HOME)]))
    # Held by the whole tree (inherited, never closed): EOF when all have exited.
    tree_r, tree_w = os.pipe()
    with open(tmp_path / "top.err", "w") as err:
        top = subprocess.Popen(
            [sys.executable, str(script), str(run), str(RECORDS)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            pass_fds=(tree_w,),
            start_new_session=True,
        )
    os.close(tree_w)
    try:
        assert top.stdout is not None
        first = top.stdout.readline()
        assert first.startswith("ready"), (tmp_path / "top.err").read_text()
        if kill_top:
            rng = random.Random(run)
            # Chaos: a random moment while the workers log, not a synchronization.
            select.select([], [], [], rng.uniform(0, 0.1))
            top.kill()
        ready, _, _ = select.select([tree_r], [], [], BOUND)
        assert ready, "a process of the tree is still running after %d s" % BOUND
        assert os.read(tree_r, 1) == b""
        top.wait(10)
    finally:
        os.close(tree_r)
        try:
            os.killpg(top.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        top.wait()
        rest = top.stdout.read() if top.stdout else ""
        if top.stdout:
            top.stdout.close()
    if not kill_top:
        end = re.fullmatch(r"all exited, (\d+) records on the fast path, (\d+) rings", rest.strip())
        assert end is not None, rest
        # The workers wrote to rings the top shares with them (x86-64 Linux):
        # the kills hit records committed there.
        assert int(end.group(2)) > 0 or not _ring.supported()
        # Records took the fast path (plans, F frames, lines written by the
        # top): the kills and interruptions hit it. How many varies: each
        # interrupted send ends its connection, and a new connection's first
        # records go the usual way until the listener's offer is read.
        fast = int(end.group(1))
        assert fast > 0
    lines = (tmp_path / "out.log").read_text(errors="replace").splitlines()
    in_file: Dict[str, int] = {}
    for line in lines:
        in_file[line] = in_file.get(line, 0) + 1
    twice = [line[:40] for line, n in in_file.items() if n > 1]
    assert twice == []
    both = 0
    #: Workers that ran to their end, and those of them that outlived the top.
    ended: Set[int] = set()
    outlived: Set[int] = set()
    #: Returned records found nowhere, per worker.
    missing: Dict[int, int] = {}
    for slot in range(WORKERS):
        ledger = _ledger(tmp_path / ("ledger-%d" % slot))
        if ledger["end"]:
            ended.add(slot)
            if ledger["end"][0]:
                outlived.add(slot)
        err_path = tmp_path / ("err-%d.log" % slot)
        err = err_path.read_text(errors="replace") if err_path.exists() else ""
        # Written there as logging.BASIC_FORMAT, after the reason.
        on_stderr = set(re.findall(r"(?:^|:)w %d (\d+) " % slot, err, re.M))
        in_log = {
            int(m.group(1)) for line in in_file if (m := re.match(r"w %d (\d+) " % slot, line))
        }
        for i in ledger["ok"]:
            if i not in in_log and str(i) not in on_stderr:
                missing[slot] = missing.get(slot, 0) + 1
            elif i in in_log and str(i) in on_stderr:
                both += 1
    # Two workers were killed; the other four ran to their end.
    assert len(ended) >= WORKERS - 2
    print(
        "run %d: top %s, %d worker(s) ran to the end (%d after the top died); returned records "
        "not found, per worker: %s; in the file and on stderr: %d; %s"
        % (run, "killed" if kill_top else "alive", len(ended), len(outlived), missing, both,
           rest.strip())
    )  # fmt: skip
    if kill_top:
        assert not set(missing) & outlived
    else:
        assert missing == {}
        assert both == 0
