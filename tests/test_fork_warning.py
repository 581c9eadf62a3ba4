"""The 3.12+ fork warning: the threads counted as the kernel counts them, our filters counted."""

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
os.close(state.proc_stat[1])  # closed behind its back: it recovers
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


def test_unquiet_after_filters_were_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our fork-warning filters are counted; a reset of the filters resets the count."""

    monkeypatch.setattr(_compat, "FORK_WARNS_ABOUT_THREADS", True)
    monkeypatch.setattr(_fork_warning, "os_thread_count", lambda: 2)
    with warnings.catch_warnings():
        assert _fork_warning.quiet_fork_warning(1) is True
        assert _fork_warning.quiet_fork_warning(1) is True
        assert state.quiet_filters == 2
        assert warnings.filters[:2] == [_fork_warning._QUIET_FORK] * 2
        _fork_warning.unquiet_fork_warning()
        assert state.quiet_filters == 1
        assert warnings.filters.count(_fork_warning._QUIET_FORK) == 1
        warnings.resetwarnings()
        _fork_warning.unquiet_fork_warning(every=True)
        assert state.quiet_filters == 0
        # Someone else's thread: the warning is theirs, nothing is added.
        monkeypatch.setattr(_fork_warning, "os_thread_count", lambda: 3)
        assert _fork_warning.quiet_fork_warning(1) is False
        assert state.quiet_filters == 0
