"""Python programs started with ``subprocess`` join the tree by themselves.

The start-up hook is ``forksafe_logging.pth`` in ``site-packages``: these
tests need the package installed as a wheel (``make test`` runs them so);
with an editable install they skip.
"""

from __future__ import annotations

import os
import site
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import Scenario, run_in_own_group

import forksafe_logging

START_METHODS = pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])


def _hook_installed() -> bool:
    places = [*site.getsitepackages(), site.getusersitepackages()]
    return any(os.path.isfile(os.path.join(p, "forksafe_logging.pth")) for p in places)


needs_hook = pytest.mark.skipif(
    not _hook_installed(),
    reason="the start-up hook forksafe_logging.pth is not installed for this Python "
    "(an editable install): make test runs these tests against the wheel",
)

CHILD = """
import json, logging, os, subprocess, sys
log = logging.getLogger("child")
log.info("child %d", os.getpid())
log.debug("child debug: below the top's level")
subprocess.run([sys.executable, "grandchild.py"], check=True)
print(json.dumps({
    "pid": os.getpid(),
    "handlers": [type(h).__name__ for h in logging.root.handlers],
    "noisy": logging.getLogger("noisy").level,
}))
"""

GRANDCHILD = """
import logging, os
logging.getLogger("grandchild").warning("grandchild %d", os.getpid())
"""


def _write(tmp: Path, **files: str) -> None:
    for name, text in files.items():
        (tmp / name).write_text(textwrap.dedent(text))


def _run(scenario: Scenario, top: str, extra: Dict[str, str]) -> List[str]:
    tmp = scenario.tmp_path
    _write(tmp, **{"top.py": top, "child.py": CHILD, "grandchild.py": GRANDCHILD})
    # Not PYTHONPATH: the installed package, and its .pth, are what is tested.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    outcome = run_in_own_group([sys.executable, "top.py"], cwd=tmp, env=env, timeout=60)
    assert outcome.returncode == 0, outcome.stderr
    return (tmp / "out.log").read_text().splitlines()


TOP = """
import json, logging, os, subprocess, sys
import forksafe_logging
logging.basicConfig(filename="out.log", level=logging.INFO,
                    format="%(process)d %(name)s %(message)s")
logging.getLogger("noisy").setLevel(logging.ERROR)
forksafe_logging.install(subprocesses=True)
logging.getLogger("top").info("before")
out = subprocess.run([sys.executable, "child.py"], check=True, capture_output=True, text=True)
logging.getLogger("top").info("after %s", out.stdout.strip())
"""


@needs_hook
def test_child_and_grandchild_join(scenario: Scenario) -> None:
    """A subprocess and its own subprocess send to the top's file, in order, once each."""
    import json

    lines = _run(scenario, TOP, {})
    assert len(lines) == 4, lines
    top_pid = lines[0].split()[0]
    assert lines[0] == "%s top before" % top_pid
    child_pid, _, child_msg = lines[1].partition(" ")
    assert child_msg == "child child %s" % child_pid
    grandchild_pid, _, grandchild_msg = lines[2].partition(" ")
    assert grandchild_msg == "grandchild grandchild %s" % grandchild_pid
    assert len({top_pid, child_pid, grandchild_pid}) == 3
    head = "%s top after " % top_pid
    assert lines[3].startswith(head)
    child = json.loads(lines[3][len(head) :])
    assert child["pid"] == int(child_pid)
    # Written by the top alone: the child configured nothing, and had the
    # top's levels before its code ran.
    assert "FileHandler" not in child["handlers"]
    assert child["noisy"] == 40


@needs_hook
def test_switch_off_by_default(scenario: Scenario) -> None:
    """Without subprocesses=True a started program logs on its own (the control)."""
    lines = _run(scenario, TOP.replace("install(subprocesses=True)", "install()"), {})
    assert [line.split(" ", 1)[1] for line in lines[:1]] == ["top before"]
    assert not any(" child " in line or "grandchild" in line for line in lines)


APP = """
import json, logging, subprocess, sys
import forksafe_logging  # only to report: the program calls nothing of it
logging.basicConfig(filename="out.log", level=logging.INFO,
                    format="%(process)d %(name)s %(message)s")
out = subprocess.run([sys.executable, "child.py"], check=True, capture_output=True, text=True)
logging.getLogger("app").info("installed %s", forksafe_logging.is_installed())
"""


@needs_hook
def test_environment_switch_makes_a_top(scenario: Scenario) -> None:
    """FORKSAFE_LOGGING_SUBPROCESSES=1 for a program that never calls install()."""
    lines = _run(scenario, APP, {"FORKSAFE_LOGGING_SUBPROCESSES": "1"})
    messages = [line.split(" ", 1)[1] for line in lines]
    assert messages[0].startswith("child child ")
    assert messages[1].startswith("grandchild grandchild ")
    assert messages[2] == "app installed True"


POOL = """
import logging, multiprocessing, os, sys
import forksafe_logging

def work(i):
    logging.getLogger("w").info("task %d", i)
    return i

if __name__ == "__main__":
    logging.basicConfig(filename="out.log", level=logging.INFO, format="%(message)s")
    forksafe_logging.install(subprocesses=True)
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:
        pool.map(work, range(20))
"""


@needs_hook
@START_METHODS
def test_pool_children_join_once(scenario: Scenario, method: str) -> None:
    """multiprocessing's own children, which the hook also sees starting, send each record once."""
    tmp = scenario.tmp_path
    (tmp / "pool.py").write_text(textwrap.dedent(POOL))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outcome = run_in_own_group([sys.executable, "pool.py", method], cwd=tmp, env=env, timeout=60)
    assert outcome.returncode == 0, outcome.stderr
    lines = (tmp / "out.log").read_text().splitlines()
    assert sorted(lines) == sorted("task %d" % i for i in range(20))


def test_subprocesses_needs_forward() -> None:
    with pytest.raises(ValueError, match="only with child='forward'"):
        forksafe_logging.install(child="inherit", subprocesses=True)
    with pytest.raises(TypeError, match="subprocesses must be True or False"):
        forksafe_logging.install(subprocesses="yes")  # type: ignore[arg-type]


def test_uninstall_clears_the_switch() -> None:
    forksafe_logging.install(subprocesses=True)
    assert os.environ["FORKSAFE_LOGGING_SUBPROCESSES"] == "1"
    forksafe_logging.install()  # the latest call's options are in force
    assert "FORKSAFE_LOGGING_SUBPROCESSES" not in os.environ
    forksafe_logging.install(subprocesses=True)
    forksafe_logging.uninstall()
    assert "FORKSAFE_LOGGING_SUBPROCESSES" not in os.environ
