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
- with ``--baseline CHECKOUT``, also ``baseline``: ``installed`` with the
  library of another checkout (a ``git worktree`` of an older commit), in
  the same rounds.

The ``installed`` variants also time ``--handshakes`` connections made by
the top itself to its own listener (``_dial.dial``: connect and handshake,
then close), with no fork in flight: what the handshake costs when the
listener thread is not paying for the copy-on-write faults of a fork that
just happened, as it is when a forked child connects at once.

The goal of #15 (measured, never asserted in a test): the first record of an
``installed`` child no dearer than a ``plain`` child's first record.

Usage::

    python benchmarks/first_record.py [--children 300] [--rounds 4] [--handshakes 200]
                                      [--baseline CHECKOUT]
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
import time
from pathlib import Path
from typing import Dict, List, Optional

import _bytecode
from _stats import quantile

VARIANTS = ("plain", "installed")
#: Run as ``installed``, with the library of the --baseline checkout.
BASELINE = "baseline"
REPO_ROOT = Path(__file__).resolve().parent.parent


def worker(variant: str, children: int, handshakes: int, tmp: Path) -> Dict[str, List[int]]:
    """Configure, then fork ``children`` children one at a time; their two timings."""
    logging.basicConfig(filename=str(tmp / ("%s.log" % variant)), level=logging.INFO)
    dials: List[int] = []
    if variant == "installed":
        import forksafe_logging
        from forksafe_logging import _dial, _endpoint, _tree  # internals: the handshake alone

        forksafe_logging.install()
        where = _tree.endpoint()
        assert where is not None
        for _ in range(handshakes):
            t0 = _now()
            # Closed as the package closes its own: its number must leave
            # the list of those a forked child closes.
            got = _dial.dial(where, 10.0)
            # With the ring (since 21f9a0b), the socket and the ring's mapping.
            sock, ring = got if isinstance(got, tuple) else (got, None)
            _endpoint.close_listed(sock)
            if ring is not None:
                ring.close()
            dials.append(_now() - t0)
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
    return {"first": first, "second": second, "dial": dials}


_now = time.perf_counter_ns


def _quantile(values: List[int], q: float) -> float:
    """In microseconds, of timings in nanoseconds."""
    return quantile(values, q) / 1000.0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--baseline", help="a checkout of another version, run as 'baseline'")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(worker(args.worker, args.children, args.handshakes, Path(tmp))))
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
    variants = VARIANTS + ((BASELINE,) if args.baseline else ())
    results: Dict[str, Dict[str, List[int]]] = {
        v: {"first": [], "second": [], "dial": []} for v in variants
    }
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else tuple(reversed(variants))
        for variant in order:
            root = args.baseline if variant == BASELINE else str(REPO_ROOT)
            path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "plain" if variant == "plain" else "installed",
            ]
            cmd += ["--children", str(args.children), "--handshakes", str(args.handshakes)]
            out = subprocess.run(
                cmd,
                check=True,
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONPATH=path),
                timeout=600,
            )
            got = json.loads(out.stdout.strip().splitlines()[-1])
            for key in ("first", "second", "dial"):
                results[variant][key].extend(got[key])
        print("  round %d/%d done" % (round_ + 1, args.rounds), flush=True)
    print()
    print(
        "%-10s %9s %10s %10s %11s %10s %10s"
        % ("variant", "children", "first p10", "first med", "second med", "dial p10", "dial med")
    )
    for variant in variants:
        got = results[variant]
        dial = (
            (_quantile(got["dial"], 0.1), _quantile(got["dial"], 0.5))
            if got["dial"]
            else (0.0, 0.0)
        )
        print(
            "%-10s %9d %10.1f %10.1f %11.1f %10.1f %10.1f"
            % (
                variant,
                len(got["first"]),
                _quantile(got["first"], 0.1),
                _quantile(got["first"], 0.5),
                _quantile(got["second"], 0.5),
                dial[0],
                dial[1],
            )
        )
    print()
    for a, b in (("installed", "plain"), ("installed", BASELINE)):
        if b in results:
            print(
                "ratio %s/%s, first record: p10 %.2f  median %.2f"
                % (
                    a,
                    b,
                    _quantile(results[a]["first"], 0.1) / _quantile(results[b]["first"], 0.1),
                    _quantile(results[a]["first"], 0.5) / _quantile(results[b]["first"], 0.5),
                )
            )
    if args.baseline:
        print(
            "ratio installed/baseline, handshake: p10 %.2f  median %.2f"
            % (
                _quantile(results["installed"]["dial"], 0.1)
                / _quantile(results[BASELINE]["dial"], 0.1),
                _quantile(results["installed"]["dial"], 0.5)
                / _quantile(results[BASELINE]["dial"], 0.5),
            )
        )
    print("goal (#15): installed/plain first record <= 1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
