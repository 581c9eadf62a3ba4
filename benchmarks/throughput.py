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
  ``forksafe_logging.install()`` in the parent; workers just log (their
  records take the fast path: the workers format the lines, the top writes).
- ``forksafe-record``: the same with ``FORKSAFE_LOGGING_FAST_PATH=0``: the
  top rebuilds and formats every record.
- ``forksafe-socket``: ``forksafe`` with ``FORKSAFE_LOGGING_RING=0``: each
  record goes down the worker's socket (one ``send()`` each) instead of into
  the ring the top shares with it.
- ``cookbook``: the logging cookbook's recipe, a ``multiprocessing.Queue``
  with the stdlib ``QueueHandler`` in workers and a ``QueueListener`` in
  the parent: the bar is 2x of this.
- ``loguru``: loguru with ``enqueue=True`` (if installed: the bench extra).
- ``mplogging``: ``multiprocessing_logging.install_mp_handler()`` (fork only,
  if installed).

Each run checks the file: every worker's records once each, in the order it
logged them (for ``direct`` and the ``forksafe`` variants; the peers' lines
are counted). Beside the rate, the CPU time of the top process per record
(for ``direct``, of the one process): what the tree costs the process that
writes.

Caller cost: the time of one ``log.info("user %s did %s in %.3f ms", ...)``
in a worker, for the three ``forksafe`` variants (sending to the
listener, whose handler writes to ``/dev/null``) against the stdlib
``QueueHandler`` putting to an in-process ``queue.Queue``.

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
from typing import Any, Callable, Dict, List, Optional, Tuple

import _bytecode

FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
WORKERS = 4


def _log_many(n: int) -> None:
    log = logging.getLogger("bench.worker")
    for i in range(n):
        log.info("user %s did %s in %.3f ms", "alice", "login", i * 0.001)


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


#: What a throughput run measured: seconds of wall time, and of the top process's CPU.
Measured = Tuple[float, float]


def _clocks() -> Measured:
    return time.perf_counter(), time.process_time()


def _since(started: Measured) -> Measured:
    return time.perf_counter() - started[0], time.process_time() - started[1]


def throughput_direct(path: str, method: str, total: int) -> Measured:
    logging.getLogger().addHandler(_file_handler(path))
    logging.getLogger().setLevel(logging.INFO)
    started = _clocks()
    _log_many(total)
    logging.getLogger().handlers[0].flush()
    return _since(started)


def throughput_forksafe(path: str, method: str, total: int) -> Measured:
    import forksafe_logging

    logging.basicConfig(filename=path, level=logging.INFO, format=FORMAT)
    forksafe_logging.install()
    started = _clocks()
    _run_workers(method, total, _log_many)
    forksafe_logging.flush()
    return _since(started)


def throughput_forksafe_record(path: str, method: str, total: int) -> Measured:
    """``forksafe`` with the fast path off: every record rebuilt and formatted in the top."""
    os.environ["FORKSAFE_LOGGING_FAST_PATH"] = "0"
    return throughput_forksafe(path, method, total)


def throughput_forksafe_socket(path: str, method: str, total: int) -> Measured:
    """``forksafe`` with no ring: one ``send()`` per record."""
    os.environ["FORKSAFE_LOGGING_RING"] = "0"
    return throughput_forksafe(path, method, total)


def _cookbook_worker(n: int, q: Any) -> None:
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(logging.INFO)
    _log_many(n)


def throughput_cookbook(path: str, method: str, total: int) -> Measured:
    q = multiprocessing.get_context(method).Queue(-1)
    listener = logging.handlers.QueueListener(q, _file_handler(path))
    listener.start()
    started = _clocks()
    _run_workers(method, total, _cookbook_worker, q)
    listener.stop()
    return _since(started)


def _loguru_worker(n: int, logger: Any) -> None:
    for i in range(n):
        logger.info("user {} did {} in {:.3f} ms", "alice", "login", i * 0.001)  # noqa: PLE1205
    logger.complete()


def throughput_loguru(path: str, method: str, total: int) -> Measured:
    from loguru import logger

    logger.remove()
    ctx = multiprocessing.get_context(method)
    logger.add(
        path,
        enqueue=True,
        context=ctx,
        format="{time} {process} {name} {level} {message}",
    )
    started = _clocks()
    _run_workers(method, total, _loguru_worker, logger)
    logger.complete()
    logger.remove()
    return _since(started)


def throughput_mplogging(path: str, method: str, total: int) -> Measured:
    import multiprocessing_logging

    logging.getLogger().addHandler(_file_handler(path))
    logging.getLogger().setLevel(logging.INFO)
    multiprocessing_logging.install_mp_handler()
    started = _clocks()
    _run_workers(method, total, _log_many)
    multiprocessing_logging.uninstall_mp_handler()
    for handler in logging.getLogger().handlers:
        handler.close()
    return _since(started)


THROUGHPUT: Dict[str, Callable[[str, str, int], Measured]] = {
    "direct": throughput_direct,
    "forksafe": throughput_forksafe,
    "forksafe-record": throughput_forksafe_record,
    "forksafe-socket": throughput_forksafe_socket,
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

    if variant == "forksafe-record":
        os.environ["FORKSAFE_LOGGING_FAST_PATH"] = "0"
    if variant == "forksafe-socket":
        os.environ["FORKSAFE_LOGGING_RING"] = "0"
    if variant.startswith("forksafe"):
        # The top writes to /dev/null, so the caller is not measuring the
        # disk: what it waits on is its own send.
        logging.getLogger().addHandler(_file_handler(os.devnull))
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


def _one(kind: str, variant: str, method: str, total: int) -> Optional[List[float]]:
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
    return [float(x) for x in out.stdout.strip().splitlines()[-1].split()]


def _measure(method: str, records: int, rounds: int, results: Dict[str, Any]) -> None:
    """Throughput and caller cost under one start method, printed and kept in ``results``."""
    variants = [v for v in THROUGHPUT if not (v == "mplogging" and method != "fork")]
    if _baseline:
        variants.append("baseline")
    times: Dict[str, List[float]] = {v: [] for v in variants}
    cpu: Dict[str, List[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            t = _one("throughput", variant, method, records)
            if t is not None:
                times[variant].append(t[0])
                cpu[variant].append(t[1])
    rates = {v: records / statistics.median(ts) for v, ts in times.items() if ts}
    top_cpu = {v: statistics.median(c) / records for v, c in cpu.items() if c}
    results["throughput_" + method] = rates
    results["top_cpu_per_record_" + method] = top_cpu
    print("\nthroughput, start method %s (records/s, median of rounds):" % method)
    for variant, rate in rates.items():
        print("  %-16s %9.0f" % (variant, rate))
    for name in ("forksafe", "forksafe-socket", "forksafe-record"):
        if name not in rates:
            continue
        for base in (
            "direct",
            "cookbook",
            "loguru",
            "mplogging",
            "baseline",
            "forksafe-socket",
            "forksafe-record",
        ):
            if base in rates and base != name:
                print("  %s / %-9s %.2fx" % (name, base, rates[name] / rates[base]))
    print("CPU of the top process per record (us, median of rounds; direct: the one process):")
    for variant, per in top_cpu.items():
        ratio = " (%.2fx direct)" % (per / top_cpu["direct"]) if "direct" in top_cpu else ""
        print("  %-16s %6.2f%s" % (variant, per * 1e6, ratio))
    costs: Dict[str, List[float]] = {
        "stdlib": [],
        "forksafe": [],
        "forksafe-record": [],
        "forksafe-socket": [],
    }
    if _baseline:
        costs["baseline"] = []
    for _ in range(rounds):
        for variant, found in costs.items():
            c = _one("caller", variant, method, 0)
            if c is not None:
                found.append(c[0])
    medians = {v: statistics.median(c) for v, c in costs.items() if c}
    results["caller_" + method] = medians
    print("caller cost of one log.info(...) in a worker, start method %s:" % method)
    for variant, cost in medians.items():
        print("  %-16s %6.2f us" % (variant, cost * 1e6))
    for name in ("forksafe", "forksafe-socket", "forksafe-record", "baseline"):
        if name in medians and "stdlib" in medians:
            print("  %s / stdlib QueueHandler  %.2fx" % (name, medians[name] / medians["stdlib"]))


def _check_file(path: str, variant: str, total: int) -> None:
    """Every worker's records in the file once each, in the order it logged them."""
    per_process: Dict[str, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            # FORMAT: date, time, pid, name, level, then the message.
            per_process.setdefault(fields[2], []).append(fields[-2])
    if not (variant in ("direct", "baseline") or variant.startswith("forksafe")):
        # The peers are counted, not read: their order is theirs.
        found = sum(len(v) for v in per_process.values())
        if found != total:
            raise SystemExit("%s wrote %d lines, expected %d" % (variant, found, total))
        return
    workers = 1 if variant == "direct" else WORKERS
    expected = ["%.3f" % (i * 0.001) for i in range(total // workers)]
    if len(per_process) != workers or any(v != expected for v in per_process.values()):
        raise SystemExit("%s: records lost, repeated or out of order" % variant)


def _keep(path: str, results: Dict[str, Any]) -> None:
    """Put this run in ``path`` (``{"runs": [...]}``), in place of one of the same Python."""
    runs: List[Dict[str, Any]] = []
    if os.path.exists(path):
        with open(path) as f:
            runs = json.load(f).get("runs", [])
    minor = results["python"].rsplit(".", 1)[0]
    runs = [r for r in runs if r["python"].rsplit(".", 1)[0] != minor] + [results]
    runs.sort(key=lambda r: tuple(int(n) for n in r["python"].split(".")[:2]))
    with open(path, "w") as f:
        json.dump({"runs": runs}, f, indent=2)
        f.write("\n")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default="fork,spawn")
    parser.add_argument(
        "--json", help="also keep the numbers in this file (one run per Python version)"
    )
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
            seconds, cpu = THROUGHPUT[variant](path, method, int(total))
            _check_file(path, variant, int(total))
        print(seconds, cpu)
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
        _keep(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
