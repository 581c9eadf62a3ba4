"""``python -m forksafe_logging demo``: the article's program, without and with the library."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, List, Optional

from forksafe_logging._article import LOST

#: A run of the article's program takes well under a second here; one that
#: has not finished after this many seconds is stuck for good.
RUN_TIMEOUT = 6.0
#: Under spawn or forkserver a run starts a process per task, each importing
#: the program: a few seconds here, more on a loaded machine. It cannot hang
#: on an inherited lock, so the allowance is wider.
SLOW_RUN_TIMEOUT = 30.0


def run_article(
    use_library: bool,
    timeout: Optional[float] = None,
    cwd: Optional[str] = None,
    handler: str = "stdlib",
    start_method: str = "fork",
) -> str:
    """Run the article's program once in a fresh interpreter.

    Returns ``"ok"``, ``"hung"`` (killed after ``timeout`` seconds; by
    default :data:`RUN_TIMEOUT` under ``fork``, else :data:`SLOW_RUN_TIMEOUT`),
    ``"lost"`` (it finished, but the tasks' lines are not all in the file
    once) or ``"failed"`` (it exited with an error).
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "forksafe_logging._article", os.path.join(tmp, "app.log")]
        if use_library:
            cmd.append("--install")
        cmd += ["--handler", handler, "--start-method", start_method]
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
            if timeout is None:
                timeout = RUN_TIMEOUT if start_method == "fork" else SLOW_RUN_TIMEOUT
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return "hung"
        return {0: "ok", LOST: "lost"}.get(code, "failed")


def _series(
    label: str, use_library: bool, runs: int, timeout: float, start_method: str = "fork"
) -> List[str]:
    outcomes = []
    sys.stdout.write("%-18s " % label)
    sys.stdout.flush()
    for _ in range(runs):
        outcome = run_article(use_library, timeout, start_method=start_method)
        outcomes.append(outcome)
        sys.stdout.write({"ok": ".", "hung": "H", "lost": "L", "failed": "F"}[outcome])
        sys.stdout.flush()
    counts = ["%d of %d runs hung" % (outcomes.count("hung"), runs)]
    counts += [
        "%d %s" % (outcomes.count(bad), bad) for bad in ("lost", "failed") if bad in outcomes
    ]
    sys.stdout.write("  %s\n" % ", ".join(counts))
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
    default = multiprocessing.get_start_method()
    if default != "fork":
        # 3.14 made forkserver the default on Linux: nothing hangs, but the
        # children have no logging configuration and their lines vanish.
        print(
            "\nThe same program with this Python's default start method, %r: it cannot hang,\n"
            "but without the library the workers' lines never reach the file.\n"
            "('L' lines lost)\n" % default
        )
        slow = max(timeout, SLOW_RUN_TIMEOUT)
        plain_default = _series("plain logging:", False, runs, slow, default)
        ours_default = _series("forksafe_logging:", True, runs, slow, default)
        print(
            "\n%s: plain logging lost lines in %d of %d runs; forksafe_logging in %d of %d"
            % (default, plain_default.count("lost"), runs, ours_default.count("lost"), runs)
        )
        ours += ours_default
    return 0 if ours.count("ok") == len(ours) else 1


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
