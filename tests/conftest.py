"""Shared fixtures: every test leaves logging and the library as it found them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import forksafe_logging
from forksafe_logging import _install, _state

TESTS = Path(__file__).resolve().parent
PACKAGE_HOME = Path(forksafe_logging.__file__).resolve().parent.parent


def pytest_report_header() -> List[str]:
    return ["forksafe_logging imported from %s" % Path(forksafe_logging.__file__).parent]


def pytest_sessionstart(session: pytest.Session) -> None:
    # make test runs the suite against the installed wheel: a file missing
    # from the package must fail, not be found in the source tree.
    if os.environ.get("FORKSAFE_TEST_WHEEL") and "site-packages" not in forksafe_logging.__file__:
        raise pytest.UsageError(
            "FORKSAFE_TEST_WHEEL is set but forksafe_logging was imported from %s"
            % forksafe_logging.__file__
        )


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    # uninstall(), and stop the listener a QueueHandler of the test started:
    # the package's state is then as fresh as before the test.
    _install.reset()
    assert _state.departures() == {}, "the test left the package's state changed"
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


class Outcome:
    """What a scenario script did: its exit, output, and the facts it reported."""

    def __init__(self, returncode: Optional[int], stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.hung = returncode is None

    @property
    def facts(self) -> Dict[str, Any]:
        assert self.returncode == 0, "scenario failed (%s):\n%s\n%s" % (
            self.returncode,
            self.stdout,
            self.stderr,
        )
        lines = self.stdout.strip().splitlines()
        assert lines, "scenario printed nothing; stderr:\n%s" % self.stderr
        facts: Dict[str, Any] = json.loads(lines[-1])
        return facts


class Scenario:
    """Runs a script in a fresh interpreter, under a timeout, in a temp dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def run(
        self,
        body: str,
        install: Optional[Dict[str, Any]] = None,
        *,
        timeout: float = 60,
        args: Optional[List[str]] = None,
    ) -> Outcome:
        script = self.tmp_path / "scenario.py"
        script.write_text(textwrap.dedent(body))
        env = dict(os.environ)
        # scenario_lib, and the forksafe_logging this test run imported (the
        # installed wheel under make test): never the source tree by accident.
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(PACKAGE_HOME)])
        cmd = [sys.executable, str(script), json.dumps(install), *(args or [])]
        return run_in_own_group(cmd, cwd=self.tmp_path, env=env, timeout=timeout)


def run_in_own_group(cmd: List[str], *, cwd: Path, env: Dict[str, str], timeout: float) -> Outcome:
    """Run ``cmd`` in a session of its own; past ``timeout``, kill all it started.

    A process that does not finish in time has ``returncode`` ``None``
    (:attr:`Outcome.hung`).
    """
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return Outcome(None, out, err)
    return Outcome(proc.returncode, out, err)


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


#: ``install()`` options for the two sides of a control test.
WITH = {"child": "inherit"}
WITHOUT = None


START_METHODS = pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])

#: Common top of the transport scenarios (test_transport, test_channel,
#: test_server, test_wire): a file handler in the top process, install().
PRELUDE = """
import collections, json, logging, multiprocessing, os, signal, sys
import forksafe_logging
from scenario_lib import report

def configure():
    logging.basicConfig(filename="out.log", level=logging.INFO,
                        format="%(processName)s|%(name)s|%(message)s")
    forksafe_logging.install()

def lines():
    forksafe_logging.flush(30)
    with open("out.log", encoding="utf-8", errors="surrogateescape") as f:
        return f.read().splitlines()
"""
