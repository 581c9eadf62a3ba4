"""``python -m forksafe_logging demo``: the article's program, without and with the library."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, List, Optional

#: A run of the article's program takes well under a second here; one that
#: has not finished after this many seconds is stuck for good.
RUN_TIMEOUT = 6.0


def run_article(
    use_library: bool,
    timeout: float = RUN_TIMEOUT,
    cwd: Optional[str] = None,
    handler: str = "stdlib",
) -> str:
    """Run the article's program once in a fresh interpreter.

    Returns ``"ok"``, ``"hung"`` (killed after ``timeout`` seconds) or
    ``"failed"`` (it exited with an error).
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "forksafe_logging._article", os.path.join(tmp, "app.log")]
        if use_library:
            cmd.append("--install")
        cmd += ["--handler", handler]
        # The child imports the same forksafe_logging as this process.
        env = dict(os.environ)
        home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [home, env.get("PYTHONPATH")]))
        # start_new_session: on a timeout the whole group, pool workers
        # included, is killed, so nothing stuck outlives the run.
        proc = subprocess.Popen(
            cmd,
            cwd=cwd or tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return "hung"
        return "ok" if code == 0 else "failed"


def _series(label: str, use_library: bool, runs: int, timeout: float) -> List[str]:
    outcomes = []
    sys.stdout.write("%-18s " % label)
    sys.stdout.flush()
    for _ in range(runs):
        outcome = run_article(use_library, timeout)
        outcomes.append(outcome)
        sys.stdout.write({"ok": ".", "hung": "H", "failed": "F"}[outcome])
        sys.stdout.flush()
    hung = outcomes.count("hung")
    failed = outcomes.count("failed")
    extra = ", %d failed" % failed if failed else ""
    sys.stdout.write("  %d of %d runs hung%s\n" % (hung, runs, extra))
    return outcomes


def demo(runs: int = 10, timeout: float = RUN_TIMEOUT) -> int:
    """Print how often the article's program hangs without and with ``install()``."""
    print(
        "The article's program: a QueueHandler/QueueListener, a thread logging in a loop,\n"
        "and a fork Pool whose children log. Each run is killed after %.0f s.\n"
        "('.' finished, 'H' hung)\n" % timeout
    )
    started = time.monotonic()
    plain = _series("plain logging:", False, runs, timeout)
    ours = _series("forksafe_logging:", True, runs, timeout)
    print(
        "\nplain logging: %d of %d runs hung; forksafe_logging: %d of %d (%.0f s)"
        % (plain.count("hung"), runs, ours.count("hung"), runs, time.monotonic() - started)
    )
    return 0 if ours.count("ok") == runs else 1


def add_command(commands: Any) -> None:
    """Add the ``demo`` subcommand to ``python -m forksafe_logging``."""
    parser = commands.add_parser("demo", help="run the article's program without and with")
    parser.add_argument("--runs", type=int, default=10, help="runs of each (default 10)")
    parser.add_argument(
        "--timeout", type=float, default=RUN_TIMEOUT, help="seconds before a run counts as hung"
    )

    def run(args: argparse.Namespace) -> int:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        return demo(args.runs, args.timeout)

    parser.set_defaults(run=run)
