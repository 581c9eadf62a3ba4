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

In each, batches with the order on and off alternate in one process (the
noise between two interpreters here is larger than what is measured), and
the report gives, over rounds of fresh interpreters, the median of the
per-process ratios.

Run ``python benchmarks/order_cost.py`` (``make bench``).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import _bytecode

CHILDREN = 4
BATCH = 200
BATCHES = 30
BUSY_BATCHES = 5
#: Seconds after which a variant is taken for hung: its stacks are printed.
HANG_AFTER = 120
VARIANTS = ["top-alone", "top-idle", "top-busy", "child"]


def _batch(log: logging.Logger) -> float:
    started = time.perf_counter()
    for i in range(BATCH):
        log.info("user %s did %s in %.3f ms", "alice", "login", i * 0.001)
    return (time.perf_counter() - started) / BATCH


def _on_off(
    log: logging.Logger, on: Callable[[], None], off: Callable[[], None], batches: int = BATCHES
) -> str:
    """Batches with the order on and off in turn, in this process; their medians."""
    costs: Dict[bool, List[float]] = {True: [], False: []}
    for b in range(2 * batches):
        ordered = b % 2 == 0
        (on if ordered else off)()
        costs[ordered].append(_batch(log))
    return "%r %r" % (statistics.median(costs[True]), statistics.median(costs[False]))


def _fork_children(busy: bool) -> List[Any]:
    """Children that log once (or for ever, if busy) and wait; returns (pid, pipe) pairs."""
    children = []
    for _ in range(CHILDREN):
        ready_r, ready_w = os.pipe()
        stop_r, stop_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(stop_w)
            for _, other in children:  # so that its end of the pipe is the last
                os.close(other)
            log = logging.getLogger("bench.child")
            log.info("connected")
            os.write(ready_w, b"x")
            if busy:
                os.set_blocking(stop_r, False)
                while True:
                    log.info("busy %d", 1)
                    try:
                        os.read(stop_r, 1)  # a byte, or EOF: the parent is gone
                        break
                    except BlockingIOError:
                        pass
            else:
                os.read(stop_r, 1)
            os._exit(0)
        os.read(ready_r, 1)
        os.close(stop_r)
        children.append((pid, stop_w))
    return children


def one(kind: str, path: str) -> str:
    # A variant that hangs says where, rather than only timing out.
    faulthandler.dump_traceback_later(HANG_AFTER, exit=True)
    logging.basicConfig(filename=path, level=logging.INFO, format="%(process)d %(message)s")
    import forksafe_logging
    from forksafe_logging import _order, _server
    from forksafe_logging._state import state

    forksafe_logging.install()
    server = _server.current()
    assert server is not None
    top = logging.getLogger("bench.top")
    on, off = (lambda: _order.enable(server.turns)), (lambda: _order.disable(server.turns))
    if kind == "top-alone":
        return _on_off(top, on, off)
    if kind == "child":
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            # The child inherits the patch, which only passes calls on there.
            # Its first record rewires it (and puts the inherited patch back).
            logging.getLogger("bench.child").info("first")
            patched = logging.Logger.callHandlers

            def child_on() -> None:
                logging.Logger.callHandlers = patched  # type: ignore[method-assign]

            def child_off() -> None:
                logging.Logger.callHandlers = state.order_wrapped  # type: ignore[method-assign]

            result = _on_off(logging.getLogger("bench.child"), child_on, child_off)
            os.write(write, result.encode())
            os._exit(0)
        os.close(write)
        result = os.read(read, 200).decode()
        os.waitpid(pid, 0)
        return result
    busy = kind == "top-busy"
    children = _fork_children(busy)
    try:
        # Fewer under a flood: each of the top's records may wait there
        # for a whole backlog (up to the order_wait of 1 s).
        return _on_off(top, on, off, BUSY_BATCHES if busy else BATCHES)
    finally:
        for pid, stop_w in children:
            os.write(stop_w, b"x")
            os.waitpid(pid, 0)


def _run(kind: str, path: str) -> Optional[Tuple[float, float]]:
    cmd = [sys.executable, __file__, "--one", kind, path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_AFTER + 60, check=False)
    if out.returncode != 0:
        sys.stderr.write("  %s failed: %s\n" % (kind, out.stderr.strip()[-5000:]))
        return None
    on, off = out.stdout.strip().splitlines()[-1].split()
    return float(on), float(off)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(one(*args.one))
        return 0
    print(_bytecode.compile_package())
    print(
        "Python %s, %d CPUs, %d rounds" % (sys.version.split()[0], os.cpu_count() or 0, args.rounds)
    )
    results: Dict[str, List[Tuple[float, float]]] = {kind: [] for kind in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                got = _run(kind, os.path.join(tmp, "%s-%d.log" % (kind, r)))
                if got is not None:
                    results[kind].append(got)
    print(
        "\nmicroseconds per logging call, order on / off (medians over rounds of the"
        "\nmedians of %d batches of %d each, on and off in turn in one process):" % (BATCHES, BATCH)
    )
    for kind in VARIANTS:
        got = results[kind]
        if not got:
            continue
        on = statistics.median(g[0] for g in got)
        off = statistics.median(g[1] for g in got)
        ratio = statistics.median(g[0] / g[1] for g in got)
        goal = "" if kind == "top-busy" else "  (goal: at most 1.10x)"
        print("  %-10s %7.2f / %7.2f us   %.2fx%s" % (kind, on * 1e6, off * 1e6, ratio, goal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
