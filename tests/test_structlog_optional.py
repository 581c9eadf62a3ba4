"""structlog is optional: without it the package works and says what the integration needs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import PACKAGE_HOME

pytestmark = pytest.mark.timeout(60)

BLOCKED = """
import os, sys
sys.modules["structlog"] = None  # as if it were not installed
import forksafe_logging
forksafe_logging.install()
pid = os.fork()
if pid == 0:
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
try:
    import forksafe_logging.structlog
except ImportError as exc:
    print(exc)
"""

UNTOUCHED = """
import os, pkgutil, importlib, sys
import forksafe_logging
for info in pkgutil.iter_modules(forksafe_logging.__path__):
    if info.name not in ("structlog", "__main__"):
        importlib.import_module("forksafe_logging." + info.name)
forksafe_logging.install()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("structlog" in sys.modules)
"""


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=str(PACKAGE_HOME),
        check=False,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_without_structlog_the_package_works_and_the_integration_says_why_not() -> None:
    assert _run(BLOCKED) == (
        "forksafe_logging.structlog needs structlog, which is not installed: "
        "pip install 'forksafe_logging[structlog]'"
    )


def test_the_package_never_imports_structlog_itself() -> None:
    assert _run(UNTOUCHED) == "False"
