"""The article's program ("Why your multiprocessing Pool is stuck"), run whole.

The control proves the program can hang without the library; the stress test
runs it many times with the library (FORKSAFE_STRESS_RUNS times; ``make
stress`` runs the full count) and requires every run to finish.
"""

from __future__ import annotations

import collections
import os

import pytest

from forksafe_logging._demo import run_article

#: Runs of the plain program before giving up on seeing it hang. It hung in
#: about 13 of 20 runs here, so 12 runs without a hang would be a ~1e-5 event.
CONTROL_RUNS = 12
STRESS_RUNS = int(os.environ.get("FORKSAFE_STRESS_RUNS", "20"))


@pytest.mark.timeout(CONTROL_RUNS * 15 + 60)
def test_plain_logging_hangs() -> None:
    """Without install(), the article's program hangs in some runs (positive control)."""
    outcomes = []
    for _ in range(CONTROL_RUNS):
        outcomes.append(run_article(use_library=False))
        if outcomes[-1] == "hung":
            break
    assert "hung" in outcomes, collections.Counter(outcomes)


@pytest.mark.stress
@pytest.mark.timeout(STRESS_RUNS * 15 + 60)
@pytest.mark.parametrize("handler", ["stdlib", "forksafe"])
def test_installed_never_hangs(handler: str) -> None:
    """With install(), every run finishes: with the stdlib QueueHandler, and with ours."""
    outcomes = collections.Counter(
        run_article(use_library=True, handler=handler) for _ in range(STRESS_RUNS)
    )
    print("article's program (%s handler) with install(): %s" % (handler, dict(outcomes)))
    assert outcomes == {"ok": STRESS_RUNS}
