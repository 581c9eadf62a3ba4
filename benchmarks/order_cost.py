"""What causal order costs a logging call: in the top process, and in a child.

The top's own records take their turn behind what children have sent (see
"What happened before is written before" in the docs): each of its logging
calls first checks the listener. This measures one
``log.info("user %s did %s in %.3f ms", ...)`` to a ``FileHandler`` with the
order on against the same with the order switched off (the library as it
was before), in one run, and reports the ratio (the goal: at most 1.1x).

Variants, each in a fresh interpreter (at-fork hooks cannot be
unregistered), in alternating rounds so the machine's noise falls on all:

- ``top-alone``: ``install()``, no child ever connected (the check reads one
  attribute).
- ``top-idle``: 4 forked children have each logged once and wait: the check
  takes a lock and polls their connections.
- ``top-busy``: 4 forked children log without pause while the top logs: the
  top's records wait for the listener's rounds. This is the price of order
  under load, reported, with no goal.
- ``child``: the caller in a forked child, which inherits the patch and
  passes through it.

Each with ``-unordered``: the same with the order off. And ``plain``: the
top with no ``install()`` at all.

Run ``python benchmarks/order_cost.py`` (``make bench``).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import _bytecode

CHILDREN = 4
BATCH = 200
BATCHES = 30
VARIANTS = ["top-alone", "top-idle", "top-busy", "child"]


def _log_batches(log: logging.Logger) -> float:
    """Median seconds per call over BATCHES batches of BATCH calls."""
    costs = []
    for _ in range(BATCHES):
        started = time.perf_counter()
        for i in range(BATCH):
            log.info("user %s did %s in %.3f ms", "alice", "login", i * 0.001)
        costs.append((time.perf_counter() - started) / BATCH)
    return statistics.median(costs)


def _fork_children(busy: bool) -> List[Any]:
    """Children that log once (or for ever, if busy) and wait; returns (pid, pipe) pairs."""
    children = []
    for _ in range(CHILDREN):
        ready_r, ready_w = os.pipe()
        stop_r, stop_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            log = logging.getLogger("bench.child")
            log.info("connected")
            os.write(ready_w, b"x")
            if busy:
                os.set_blocking(stop_r, False)
                while True:
                    log.info("busy %d", 1)
                    try:
                        os.read(stop_r, 1)
                        break
                    except BlockingIOError:
                        pass
            else:
                os.read(stop_r, 1)
            os._exit(0)
        os.read(ready_r, 1)
        children.append((pid, stop_w))
    return children


def one(variant: str, path: str) -> float:
    ordered = not variant.endswith("-unordered")
    kind = variant.replace("-unordered", "")
    logging.basicConfig(filename=path, level=logging.INFO, format="%(process)d %(message)s")
    if kind == "plain":
        return _log_batches(logging.getLogger("bench.top"))
    import forksafe_logging
    from forksafe_logging import _order, _server

    forksafe_logging.install()
    server = _server.current()
    assert server is not None
    if not ordered:
        _order.disable(server)
    if kind == "top-alone":
        return _log_batches(logging.getLogger("bench.top"))
    if kind == "child":
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            cost = _log_batches(logging.getLogger("bench.child"))
            os.write(write, repr(cost).encode())
            os._exit(0)
        os.close(write)
        cost = float(os.read(read, 100))
        os.waitpid(pid, 0)
        return cost
    children = _fork_children(busy=kind == "top-busy")
    try:
        return _log_batches(logging.getLogger("bench.top"))
    finally:
        for pid, stop_w in children:
            os.write(stop_w, b"x")
            os.waitpid(pid, 0)


def _run(variant: str, path: str) -> Optional[float]:
    cmd = [sys.executable, __file__, "--one", variant, path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        sys.stderr.write("  %s failed: %s\n" % (variant, out.stderr.strip()[-500:]))
        return None
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(repr(one(*args.one)))
        return 0
    print(_bytecode.compile_package())
    print(
        "Python %s, %d CPUs, %d rounds" % (sys.version.split()[0], os.cpu_count() or 0, args.rounds)
    )
    names = ["plain"] + [v + s for v in VARIANTS for s in ("", "-unordered")]
    results: Dict[str, List[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                cost = _run(name, os.path.join(tmp, "%s-%d.log" % (name, r)))
                if cost is not None:
                    results[name].append(cost)
    median = {name: statistics.median(v) for name, v in results.items() if v}
    print(
        "\nseconds per logging call (median over rounds of the median of %d batches of %d):"
        % (BATCHES, BATCH)
    )
    for name in names:
        if name in median:
            print("  %-22s %7.2f us" % (name, median[name] * 1e6))
    print("\norder on / order off (goal: at most 1.1x; top-busy has none):")
    for v in VARIANTS:
        if v in median and v + "-unordered" in median:
            print("  %-10s %.2fx" % (v, median[v] / median[v + "-unordered"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
