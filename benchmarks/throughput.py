"""Throughput and caller-side cost of multiprocess logging, side by side with the baselines.

Each variant runs in a fresh interpreter (at-fork hooks cannot be
unregistered), in alternating rounds so that the machine's noise falls on all
of them alike; the report gives the median over rounds and ratios.

Throughput: 4 worker processes log ``--records`` records in total to one file
with the format ``%(asctime)s %(process)d %(name)s %(levelname)s %(message)s``;
the time runs from the workers' start until every record is in the file.

- ``direct``: one process writes the same number of records with a
  ``FileHandler`` (no workers): the bar is 0.8x of this.
- ``forksafe``: ``logging.basicConfig(filename=...)`` and
  ``forksafe_logging.install()`` in the parent; workers just log.
- ``cookbook``: the logging cookbook's recipe, a ``multiprocessing.Queue``
  with the stdlib ``QueueHandler`` in workers and a ``QueueListener`` in
  the parent: the bar is 2x of this.
- ``loguru``: loguru with ``enqueue=True`` (if installed: the bench extra).
- ``mplogging``: ``multiprocessing_logging.install_mp_handler()`` (fork only,
  if installed).

Caller cost: the time of one ``log.info("user %s did %s in %.3f ms", ...)``
in a worker, for ``forksafe`` (sending to the listener) against the stdlib
``QueueHandler`` putting to an in-process ``queue.Queue``: the bar is 1.5x.

With ``--baseline DIR`` (a checkout of another version of the library,
e.g. ``git worktree add /tmp/base <commit>``), that version's ``forksafe``
variant runs too, in the same rounds, reported as ``baseline``, and the
current one as a ratio of it.

Run ``python benchmarks/throughput.py`` (``make bench``); ``--json PATH``
keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import multiprocessing
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import _bytecode

FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
WORKERS = 4


def _log_many(n: int) -> None:
    log = logging.getLogger("bench.worker")
    for i in range(n):
        log.info("user %s did %s in %.3f ms", "alice", "login", i * 0.001)


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _file_handler(path: str) -> logging.FileHandler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def _run_workers(method: str, total: int, target: Callable[..., None], *args: Any) -> None:
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=target, args=(total // WORKERS, *args)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("a worker failed: exit code %s" % p.exitcode)


def throughput_direct(path: str, method: str, total: int) -> float:
    logging.getLogger().addHandler(_file_handler(path))
    logging.getLogger().setLevel(logging.INFO)
    started = time.perf_counter()
    _log_many(total)
    logging.getLogger().handlers[0].flush()
    return time.perf_counter() - started


def throughput_forksafe(path: str, method: str, total: int) -> float:
    import forksafe_logging

    logging.basicConfig(filename=path, level=logging.INFO, format=FORMAT)
    forksafe_logging.install()
    started = time.perf_counter()
    _run_workers(method, total, _log_many)
    forksafe_logging.flush()
    return time.perf_counter() - started


def _cookbook_worker(n: int, q: Any) -> None:
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(logging.INFO)
    _log_many(n)


def throughput_cookbook(path: str, method: str, total: int) -> float:
    q = multiprocessing.get_context(method).Queue(-1)
    listener = logging.handlers.QueueListener(q, _file_handler(path))
    listener.start()
    started = time.perf_counter()
    _run_workers(method, total, _cookbook_worker, q)
    listener.stop()
    return time.perf_counter() - started


def _loguru_worker(n: int, logger: Any) -> None:
    for i in range(n):
        logger.info("user {} did {} in {:.3f} ms", "alice", "login", i * 0.001)  # noqa: PLE1205
    logger.complete()


def throughput_loguru(path: str, method: str, total: int) -> float:
    from loguru import logger

    logger.remove()
    ctx = multiprocessing.get_context(method)
    logger.add(
        path,
        enqueue=True,
        context=ctx,
        format="{time} {process} {name} {level} {message}",
    )
    started = time.perf_counter()
    _run_workers(method, total, _loguru_worker, logger)
    logger.complete()
    logger.remove()
    return time.perf_counter() - started


def throughput_mplogging(path: str, method: str, total: int) -> float:
    import multiprocessing_logging

    logging.getLogger().addHandler(_file_handler(path))
    logging.getLogger().setLevel(logging.INFO)
    multiprocessing_logging.install_mp_handler()
    started = time.perf_counter()
    _run_workers(method, total, _log_many)
    multiprocessing_logging.uninstall_mp_handler()
    for handler in logging.getLogger().handlers:
        handler.close()
    return time.perf_counter() - started


THROUGHPUT: Dict[str, Callable[[str, str, int], float]] = {
    "direct": throughput_direct,
    "forksafe": throughput_forksafe,
    "cookbook": throughput_cookbook,
    "loguru": throughput_loguru,
    "mplogging": throughput_mplogging,
}


def _caller_worker(n: int, variant: str, conn: Any) -> None:
    log = logging.getLogger("bench.caller")
    if variant == "stdlib":
        root = logging.getLogger()
        root.handlers[:] = [logging.handlers.QueueHandler(queue.Queue())]
        root.setLevel(logging.INFO)
    costs = []
    for _ in range(20):
        started = time.perf_counter()
        for i in range(n):
            log.info("user %s did %s in %.3f ms", "alice", "login", i * 0.001)
        costs.append((time.perf_counter() - started) / n)
    conn.send(statistics.median(costs))


def caller_cost(variant: str, method: str) -> float:
    import forksafe_logging

    if variant == "forksafe":
        # A listener that only decodes and dispatches, so the caller is not
        # measuring the disk: what it waits on is its own send.
        logging.getLogger().addHandler(logging.NullHandler())
        logging.getLogger().setLevel(logging.INFO)
        forksafe_logging.install()
    ctx = multiprocessing.get_context(method)
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_caller_worker, args=(200, variant, child))
    p.start()
    cost: float = parent.recv()
    p.join()
    return cost


#: The checkout that the ``baseline`` variant imports the library from.
_baseline: Optional[str] = None


def _one(kind: str, variant: str, method: str, total: int) -> Optional[float]:
    """Run one measurement in a fresh interpreter; None if the variant cannot run here."""
    env = dict(os.environ)
    if variant == "baseline":
        assert _baseline is not None
        variant = "forksafe"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_baseline, env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--one", kind, variant, method, str(total)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, env=env)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        sys.stderr.write("  %s %s/%s failed: %s\n" % (kind, variant, method, last))
        return None
    return float(out.stdout.strip().splitlines()[-1])


def _measure(method: str, records: int, rounds: int, results: Dict[str, Any]) -> None:
    """Throughput and caller cost under one start method, printed and kept in ``results``."""
    variants = [v for v in THROUGHPUT if not (v == "mplogging" and method != "fork")]
    if _baseline:
        variants.append("baseline")
    times: Dict[str, List[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            t = _one("throughput", variant, method, records)
            if t is not None:
                times[variant].append(t)
    rates = {v: records / statistics.median(ts) for v, ts in times.items() if ts}
    results["throughput_" + method] = rates
    print("\nthroughput, start method %s (records/s, median of rounds):" % method)
    for variant, rate in rates.items():
        print("  %-10s %9.0f" % (variant, rate))
    if "forksafe" in rates:
        for base in ("direct", "cookbook", "loguru", "mplogging", "baseline"):
            if base in rates:
                print("  forksafe / %-9s %.2fx" % (base, rates["forksafe"] / rates[base]))
    costs: Dict[str, List[float]] = {"stdlib": [], "forksafe": []}
    if _baseline:
        costs["baseline"] = []
    for _ in range(rounds):
        for variant, found in costs.items():
            c = _one("caller", variant, method, 0)
            if c is not None:
                found.append(c)
    medians = {v: statistics.median(c) for v, c in costs.items() if c}
    results["caller_" + method] = medians
    print("caller cost of one log.info(...) in a worker, start method %s:" % method)
    for variant, cost in medians.items():
        print("  %-10s %6.2f us" % (variant, cost * 1e6))
    if "forksafe" in medians and "stdlib" in medians:
        print("  forksafe / stdlib QueueHandler  %.2fx" % (medians["forksafe"] / medians["stdlib"]))
    if "forksafe" in medians and "baseline" in medians:
        print("  forksafe / baseline  %.2fx" % (medians["forksafe"] / medians["baseline"]))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default="fork,spawn")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--baseline", help="a checkout of another version, run side by side")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        kind, variant, method, total = args.one
        if kind == "caller":
            print(caller_cost(variant, method))
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bench.log")
            seconds = THROUGHPUT[variant](path, method, int(total))
            lines = _count_lines(path)
            if lines != int(total):
                raise SystemExit("%s wrote %d lines, expected %s" % (variant, lines, total))
        print(seconds)
        return 0

    global _baseline
    if args.baseline:
        _baseline = os.path.abspath(args.baseline)
        if not os.path.isfile(os.path.join(_baseline, "forksafe_logging", "__init__.py")):
            parser.error("--baseline: no forksafe_logging package in %s" % _baseline)
    methods = args.methods.split(",")
    print(
        "Python %s, %d records, %d workers, %d rounds"
        % (sys.version.split()[0], args.records, WORKERS, args.rounds)
    )
    print(_bytecode.compile_package())
    results: Dict[str, Any] = {"python": sys.version.split()[0], "records": args.records}
    for method in methods:
        _measure(method, args.records, args.rounds, results)
    print("\ncommand: python benchmarks/throughput.py %s" % " ".join(argv or sys.argv[1:]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
