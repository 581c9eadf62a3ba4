"""What the first log call of a forked child costs, with and without ``install()``.

#15's item 4: a forked child's first record pays for everything the child
does on first use: the rewiring of its loggers, its channel, the connection
to the listener and its handshake, and the record itself. This measures it
as the child sees it::

    t0 = perf_counter_ns(); log.info("first"); t1 = perf_counter_ns()
    log.info("second"); t2 = perf_counter_ns()

in each of ``--children`` forked children of one parent, which configured a
``FileHandler`` on the root logger (``basicConfig``), and reports the p10
and the median of the first and of the second call, in microseconds.

Variants, each in a fresh interpreter (fork hooks cannot be unregistered),
in alternating rounds so that the machine's noise hits them alike:

- ``plain``: no ``forksafe_logging``; the child writes to the file it
  inherited, as plain logging does (its first record is dearer than the
  next: the file's first write, the format of the first time stamp...);
- ``installed``: ``forksafe_logging.install()`` (forward): the child's
  records go to the top's listener, which writes them to the file.

The goal of #15 (measured, never asserted in a test): the first record of an
``installed`` child no dearer than a ``plain`` child's first record.

Usage::

    python benchmarks/first_record.py [--children 300] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import _bytecode

VARIANTS = ("plain", "installed")
REPO_ROOT = Path(__file__).resolve().parent.parent


def worker(variant: str, children: int, tmp: Path) -> Dict[str, List[int]]:
    """Configure, then fork ``children`` children one at a time; their two timings."""
    logging.basicConfig(filename=str(tmp / ("%s.log" % variant)), level=logging.INFO)
    if variant == "installed":
        import forksafe_logging

        forksafe_logging.install()
    log = logging.getLogger("bench")
    log.info("parent")  # the parent's own first record is not what is measured
    first: List[int] = []
    second: List[int] = []
    for _ in range(children):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            t0 = _now()
            log.info("first")
            t1 = _now()
            log.info("second")
            t2 = _now()
            os.write(w, b"%d %d" % (t1 - t0, t2 - t1))
            os._exit(0)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 64)
            if not chunk:
                break
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        a, b = data.split()
        first.append(int(a))
        second.append(int(b))
    if variant == "installed":
        import forksafe_logging

        forksafe_logging.flush()
    return {"first": first, "second": second}


def _now() -> int:
    import time

    return time.perf_counter_ns()


def _quantile(values: List[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(worker(args.worker, args.children, Path(tmp))))
        return 0
    print("first record of a forked child: its first and second log.info, as it sees them")
    print(
        "python:   %s %s (%s)"
        % (platform.python_implementation(), platform.python_version(), sys.executable)
    )
    print(_bytecode.compile_package())
    print(
        "setup:    basicConfig(filename=...), %d children x %d rounds per variant, interleaved"
        % (args.children, args.rounds)
    )
    results: Dict[str, Dict[str, List[int]]] = {v: {"first": [], "second": []} for v in VARIANTS}
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    for round_ in range(args.rounds):
        order = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            cmd = [sys.executable, __file__, "--worker", variant, "--children", str(args.children)]
            out = subprocess.run(
                cmd, check=True, capture_output=True, text=True, env=env, timeout=600
            )
            got = json.loads(out.stdout.strip().splitlines()[-1])
            for key in ("first", "second"):
                results[variant][key].extend(got[key])
        print("  round %d/%d done" % (round_ + 1, args.rounds), flush=True)
    print()
    print(
        "%-12s %10s %12s %12s %12s"
        % ("variant", "children", "first p10", "first med", "second med")
    )
    for variant in VARIANTS:
        got = results[variant]
        print(
            "%-12s %10d %12.1f %12.1f %12.1f"
            % (
                variant,
                len(got["first"]),
                _quantile(got["first"], 0.1),
                _quantile(got["first"], 0.5),
                _quantile(got["second"], 0.5),
            )
        )
    ratio_p10 = _quantile(results["installed"]["first"], 0.1) / _quantile(
        results["plain"]["first"], 0.1
    )
    ratio_med = _quantile(results["installed"]["first"], 0.5) / _quantile(
        results["plain"]["first"], 0.5
    )
    print()
    print(
        "ratio installed/plain, first record: p10 %.2f  median %.2f  (goal: <= 1.0)"
        % (ratio_p10, ratio_med)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
