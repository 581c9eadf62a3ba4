"""The 3.12+ fork warning: threads counted as the kernel counts them; a filter for our thread."""

from __future__ import annotations

import warnings

import pytest
from conftest import Scenario

from forksafe_logging import _compat, _fork_warning
from forksafe_logging._state import state


class TestThreadCount:
    BODY = """
import os, threading, json
from forksafe_logging import _fork_warning
from forksafe_logging._state import state
from scenario_lib import report

before = _fork_warning.os_thread_count()
stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
with_thread = _fork_warning.os_thread_count()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    # The parent's descriptor names the parent's /proc entry: not this one.
    os.write(w, json.dumps(_fork_warning.os_thread_count()).encode())
    os._exit(0)
os.close(w)
in_child = json.loads(os.read(r, 100))
os.waitpid(pid, 0)
stop.set()
t.join()
os.close(state.proc_task[1])  # closed behind its back: it recovers
first = _fork_warning.os_thread_count()
# The thread has joined, but the kernel may still count it for a moment
# (its OS thread ends after join() returns): read until it does not.
import time
deadline = time.monotonic() + 10
while True:
    again = _fork_warning.os_thread_count()
    if again == before or time.monotonic() > deadline:
        break
report(before=before, with_thread=with_thread, in_child=in_child, after_close=[first, again])
"""

    def test_counts_this_process_threads(self, scenario: Scenario) -> None:
        facts = scenario.run(self.BODY, None).facts
        assert facts["with_thread"] == facts["before"] + 1
        assert facts["in_child"] == 1
        # The first read after the close fails (0: the caller counts Python
        # threads instead); the next opens the file again.
        assert facts["after_close"] == [0, facts["before"]]


MATCH_BODY = """
import _thread, logging, os, threading, warnings, json
from scenario_lib import report
import forksafe_logging
from forksafe_logging import _fork_warning
from forksafe_logging._state import state

logging.basicConfig(level=logging.INFO)
forksafe_logging.install()
ours = state.fork_filter
text = ("This process (pid=%d) is multi-threaded, use of fork() may lead to deadlocks in the "
        "child." % os.getpid())
facts = {"first": warnings.filters[0] is ours, "alone": ours[1].match(text)}
facts["forkpty"] = ours[1].match(text.replace("fork()", "forkpty()"))
facts["other pid"] = ours[1].match(text.replace(str(os.getpid()), str(os.getpid() + 1)))
facts["other text"] = ours[1].match("This process is fine")

# A thread threading does not know of (as a C extension starts them): the
# kernel counts it, so the warning is the program's.
gate = _thread.allocate_lock()
gate.acquire()
started = _thread.allocate_lock()
started.acquire()
def hidden():
    started.release()
    gate.acquire()
_thread.start_new_thread(hidden, ())
started.acquire()
facts["untracked thread"] = ours[1].match(text)
gate.release()

stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
facts["user thread"] = ours[1].match(text)
stop.set()
t.join()

# The two threads have ended, but the kernel may count them for a moment
# after (see above): until it does not, the fork's warning is theirs.
import time
deadline = time.monotonic() + 10
while _fork_warning.os_thread_count() > 2 and time.monotonic() < deadline:
    pass

# Filters the program puts in front, or a reset: the next fork puts ours first again.
warnings.resetwarnings()
warnings.simplefilter("always")
shown = []
warnings.showwarning = lambda message, category, *rest: shown.append(str(message))
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
facts["after reset"] = shown
facts["front again"] = warnings.filters[0] is ours and warnings.filters.count(ours) == 1
forksafe_logging.uninstall()
facts["after uninstall"] = [
    repr(f[1]) for f in warnings.filters if isinstance(f[1], _fork_warning.OnlyOurThread)
]
report(**facts)
"""


@pytest.mark.skipif(not _compat.FORK_WARNS_ABOUT_THREADS, reason="os.fork() warns from 3.12")
@pytest.mark.timeout(60)
def test_filter_matches_only_our_thread(scenario: Scenario) -> None:
    """The filter ignores the warning only when our listener is the only other thread."""
    facts = scenario.run(MATCH_BODY, None).facts
    assert facts == {
        "first": True,
        "alone": True,
        "forkpty": True,
        "other pid": False,
        "other text": False,
        "untracked thread": False,
        "user thread": False,
        "after reset": [],
        "front again": True,
        "after uninstall": [],
    }


def test_no_filter_before_312() -> None:
    """Before 3.12 nothing warns, and nothing is put in ``warnings.filters``."""
    if _compat.FORK_WARNS_ABOUT_THREADS:
        pytest.skip("3.12+ warns")
    with warnings.catch_warnings():
        _fork_warning.keep_first()
        assert state.fork_filter is None
        assert not _fork_warning.installed()
