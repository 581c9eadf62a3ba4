"""Runs ``python -m forksafe_logging doctor --article`` at each build, for the doctor's page.

The report goes to ``docs/_generated/doctor-article.txt`` (not kept in git),
which the page includes: what the page shows is what the command prints
today, never a copy that could drift. A failing command fails the build.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

COMMAND = ["python", "-m", "forksafe_logging", "doctor", "--article"]


def _run(app: Any) -> None:
    out = Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, *COMMAND[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (" ".join(COMMAND), proc.stderr))
    (out / "doctor-article.txt").write_text("$ %s\n%s" % (" ".join(COMMAND), proc.stdout))


def setup(app: Any) -> Dict[str, Any]:
    app.connect("builder-inited", _run)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
