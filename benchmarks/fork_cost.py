"""What ``install()`` adds to the cost of a fork, with a realistic logging configuration.

One *fork* here is the whole round trip as a parent sees it::

    t0 = perf_counter_ns(); pid = os.fork()   # child: os._exit(0) at once
    os.waitpid(pid, 0); dt = perf_counter_ns() - t0

so it includes every at-fork hook on both sides (the stdlib's and ours), the
copy of the page tables, the child's exit and the wait for it.

The goal (measured, never asserted in a test): with ``install()`` active and
50 handlers configured, a fork costs no more than 1.2x a plain fork with the
same 50 handlers, comparing a low quantile (p10) of many forks.

Hooks registered with ``os.register_at_fork`` cannot be unregistered, so each
variant runs in a fresh interpreter: this script starts worker processes of
itself (``--worker VARIANT``). The variants run in alternating rounds (plain,
installed, ..., then the next round in reverse order), one worker at a time,
so that the noise of the machine hits them all alike. Each worker configures
logging, warms up, forks ``--forks`` times and prints its timings as JSON.

Variants:

- ``plain``: ``--handlers`` handlers (default 50) spread over the root logger
  and 10 named loggers: file, rotating file, stream to ``/dev/null``, stream
  to ``io.StringIO``, ``NullHandler``, ``MemoryHandler``, and two
  ``QueueHandler``\\ s whose ``queue.Queue`` a running ``QueueListener``
  drains into a file. No ``forksafe_logging`` at all.
- ``installed``: the same configuration, then ``forksafe_logging.install()``
  (with ``child=--child`` if given; the mode in force is printed).
- ``imported``: the same configuration, ``forksafe_logging`` imported but not
  installed: what the import alone costs a fork (it imports
  ``multiprocessing``), so installed/imported is what the hooks cost.
- ``listener-only``: ``install()``, then the hooks switched off while the
  listener thread and its sockets stay: installed/listener-only is what the
  hooks themselves cost, listener-only/imported what the listener's state costs.
- ``plain-bare`` and ``installed-bare``: no handler and no listener at all,
  without and with ``install()``: the fixed cost of the hooks.
- With ``--baseline CHECKOUT``, also ``baseline`` and ``baseline-bare``:
  ``installed`` and ``installed-bare`` with the library of another checkout
  (an older commit, say, from ``git worktree add``), in the same rounds, so
  that installed/baseline compares two versions under the same noise.

How to read the output: the p10 and the median of all forks of a variant,
in microseconds, and the ratios installed/plain (the goal) and
installed-bare/plain-bare (and the split of the first between importing and
installing). p10 is the one to judge by: the upper quantiles
of a fork on a shared machine mostly measure the scheduler. The range of
the per-round p10 ratios says how much to trust the pooled one. ``--json``
writes everything, raw timings included (``benchmarks/results/`` is
ignored by git).

Usage::

    python benchmarks/fork_cost.py [--forks 500] [--rounds 8] [--handlers 50]
                                   [--variants plain,installed,...] [--child MODE]
                                   [--baseline CHECKOUT] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import logging.handlers
import os
import platform
import queue
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import _bytecode
from _stats import quantile

VARIANTS = ("plain", "installed", "imported", "listener-only", "plain-bare", "installed-bare")
#: The pairs reported as ratios, the goal's first.
RATIOS = (
    ("installed", "plain"),
    ("imported", "plain"),
    ("installed", "imported"),
    ("installed-bare", "plain-bare"),
    ("installed", "baseline"),
    ("installed-bare", "baseline-bare"),
)
#: Run as these variants, with the library of the --baseline checkout.
BASELINES = {"baseline": "installed", "baseline-bare": "installed-bare"}
GOAL = 1.2
#: Named loggers the handlers are spread over, besides the root logger.
LOGGERS = 10
#: Handlers that feed a queue drained by a running ``QueueListener``.
QUEUE_HANDLERS = 2
WARMUP_FORKS = 50

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# Worker: one variant in a fresh interpreter.


def _handler(kind: str, index: int, tmp: Path, devnull: Any) -> logging.Handler:
    if kind == "file":
        return logging.FileHandler(tmp / ("file-%d.log" % index))
    if kind == "rotating":
        return logging.handlers.RotatingFileHandler(
            tmp / ("rotating-%d.log" % index), maxBytes=1 << 20, backupCount=2
        )
    if kind == "devnull":
        return logging.StreamHandler(devnull)
    if kind == "stringio":
        return logging.StreamHandler(io.StringIO())
    if kind == "null":
        return logging.NullHandler()
    if kind == "memory":
        target = logging.FileHandler(tmp / ("memory-target-%d.log" % index))
        return logging.handlers.MemoryHandler(capacity=100, target=target)
    raise ValueError(kind)


HANDLER_KINDS = ("file", "devnull", "stringio", "rotating", "null", "memory")


def configure(count: int, tmp: Path) -> List[logging.handlers.QueueListener]:
    """Attach ``count`` handlers to the root logger and ``LOGGERS`` named loggers.

    Returns the running listeners (to stop at the end).
    """
    loggers = [logging.getLogger()] + [
        logging.getLogger("bench.component%d" % i) for i in range(LOGGERS)
    ]
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker
    listeners: List[logging.handlers.QueueListener] = []
    queue_slots = set() if count < 2 * QUEUE_HANDLERS else {0, count // 2}
    for index in range(count):
        handler: logging.Handler
        if index in queue_slots:
            q: queue.Queue[Any] = queue.Queue()
            handler = logging.handlers.QueueHandler(q)
            target = logging.FileHandler(tmp / ("listener-%d.log" % index))
            listener = logging.handlers.QueueListener(q, target)
            listener.start()
            listeners.append(listener)
        else:
            handler = _handler(HANDLER_KINDS[index % len(HANDLER_KINDS)], index, tmp, devnull)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        loggers[index % len(loggers)].addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.INFO)
    # Some traffic, so the streams, queues and listeners have been used.
    for logger in loggers:
        for i in range(3):
            logger.info("warming up %d", i)
    for listener in listeners:
        listener.queue.join()  # type: ignore[attr-defined]
    return listeners


def time_forks(count: int) -> List[int]:
    """Nanoseconds of ``count`` round trips: fork, child exits at once, wait."""
    samples: List[int] = []
    clock = time.perf_counter_ns
    fork = os.fork
    waitpid = os.waitpid
    for _ in range(count):
        t0 = clock()
        pid = fork()
        if pid == 0:
            os._exit(0)
        waitpid(pid, 0)
        samples.append(clock() - t0)
    return samples


def _has_state_module(package: Any) -> bool:
    """Whether the imported checkout keeps its state in ``_state`` (0.4 on)."""
    return os.path.exists(os.path.join(os.path.dirname(package.__file__), "_state.py"))


def worker(variant: str, forks: int, handlers: int, child: Optional[str]) -> None:
    # 3.12+ warns at every fork while the listener threads run; the warning
    # is the same for both variants and printing it would be noise.
    warnings.filterwarnings(
        "ignore", message=r"This process .* is multi-threaded", category=DeprecationWarning
    )
    bare = variant.endswith("-bare")
    with tempfile.TemporaryDirectory(prefix="fork-cost-") as tmp:
        listeners = [] if bare else configure(handlers, Path(tmp))
        if variant.startswith(("installed", "imported", "listener")):
            try:
                import forksafe_logging
            except ImportError:  # run from a checkout without installing it
                sys.path.insert(0, str(REPO_ROOT))
                import forksafe_logging
            if variant.startswith(("installed", "listener")):
                # child=None: whatever install() does by default.
                forksafe_logging.install(**({} if child is None else {"child": child}))
            if variant == "listener-only":
                # The listener thread and its sockets stay; the hooks see
                # neither settings nor listener, so they return at once. What
                # is left over "imported" is the cost of that state alone.
                # Where the state lives: _state (0.4), the modules before. Not
                # by trying the import: an editable install's finder would
                # supply its own _state to an older checkout.
                if not _has_state_module(forksafe_logging):
                    from forksafe_logging import _server, _settings

                    _settings.current = None  # type: ignore[attr-defined]
                    keep_alive = _server._server  # type: ignore[attr-defined]
                    _server._server = None  # type: ignore[attr-defined]
                else:
                    from forksafe_logging._state import state

                    state.settings = None
                    keep_alive = state.server  # noqa: F841
                    state.server = None
        time_forks(WARMUP_FORKS)
        gc.collect()
        samples = time_forks(forks)
        reached = module = mode = None
        if variant.startswith("installed"):
            from forksafe_logging import _reach, _settings

            reached = len(_reach.collect().handlers)
            module = os.path.dirname(_reach.__file__)
            if not _has_state_module(forksafe_logging):  # a checkout from before _state
                mode = getattr(getattr(_settings, "current", None), "child", None)
            else:
                from forksafe_logging._state import state

                mode = getattr(state.settings, "child", None)
            forksafe_logging.uninstall()
        for listener in listeners:
            listener.stop()
        logging.shutdown()
    result = {
        "variant": variant,
        "samples_ns": samples,
        "reached": reached,
        "module": module,
        "child": mode,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------
# Orchestrator: starts the workers in alternating rounds and reports.


def run_worker(variant: str, args: argparse.Namespace) -> Dict[str, Any]:
    env = None
    if variant in BASELINES:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.baseline, env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        BASELINES.get(variant, variant),
        "--forks",
        str(args.forks),
        "--handlers",
        str(args.handlers),
    ]
    if args.child is not None:
        command += ["--child", args.child]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env)
    result: Dict[str, Any] = json.loads(done.stdout)
    if variant in BASELINES and not Path(result["module"]).samefile(
        Path(args.baseline) / "forksafe_logging"
    ):
        raise SystemExit("--baseline: the worker imported %s instead" % result["module"])
    return result


def summarize(samples_ns: Sequence[int]) -> Dict[str, float]:
    us = [s / 1000 for s in samples_ns]
    return {"forks": len(us), "p10_us": quantile(us, 0.10), "median_us": quantile(us, 0.5)}


def print_report(
    variants: Sequence[str], per_round: Dict[str, List[List[int]]]
) -> Tuple[Dict[str, Dict[str, float]], Dict[str, Dict[str, float]]]:
    """Print the table and the ratios; return both for the JSON file."""
    stats = {v: summarize([s for r in per_round[v] for s in r]) for v in variants}
    print()
    print("%-16s %7s %10s %10s" % ("variant", "forks", "p10 us", "median us"))
    for v in variants:
        st = stats[v]
        print("%-16s %7d %10.1f %10.1f" % (v, st["forks"], st["p10_us"], st["median_us"]))

    ratios: Dict[str, Dict[str, float]] = {}
    print()
    for num, den in RATIOS:
        if num not in stats or den not in stats:
            continue
        round_p10 = [
            quantile(a, 0.1) / quantile(b, 0.1) for a, b in zip(per_round[num], per_round[den])
        ]
        ratio = {
            "p10": stats[num]["p10_us"] / stats[den]["p10_us"],
            "median": stats[num]["median_us"] / stats[den]["median_us"],
            "round_p10_min": min(round_p10),
            "round_p10_max": max(round_p10),
        }
        ratios["%s/%s" % (num, den)] = ratio
        print(
            "ratio %-26s p10 %.3f  median %.3f  (per-round p10 ratios %.3f..%.3f)"
            % (
                "%s/%s:" % (num, den),
                ratio["p10"],
                ratio["median"],
                ratio["round_p10_min"],
                ratio["round_p10_max"],
            )
        )
    goal = ratios.get("installed/plain")
    if goal is not None:
        verdict = "met" if goal["p10"] <= GOAL else "NOT met"
        print("goal: installed/plain <= %.1f at p10: %s" % (GOAL, verdict))

    return stats, ratios


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--forks", type=int, default=500, help="forks per variant per round")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds")
    parser.add_argument("--handlers", type=int, default=50, help="handlers configured")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated, among %s" % ", ".join(VARIANTS),
    )
    parser.add_argument(
        "--child",
        help="install(child=...) for the installed variants; default: install()'s own default",
    )
    parser.add_argument(
        "--baseline",
        help="a checkout of another version: its installed variants run side by side",
    )
    parser.add_argument("--json", type=Path, help="write the results, raw timings included")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.forks < 1 or args.rounds < 1 or args.handlers < 0:
        parser.error("--forks and --rounds must be >= 1, --handlers >= 0")

    if args.worker:
        worker(args.worker, args.forks, args.handlers, args.child)
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        parser.error("unknown variants: %s" % ", ".join(unknown or ["(none)"]))
    if args.baseline is not None:
        args.baseline = os.path.abspath(args.baseline)
        if not os.path.isfile(os.path.join(args.baseline, "forksafe_logging", "__init__.py")):
            parser.error("--baseline: no forksafe_logging package in %s" % args.baseline)
        variants += [b for b, v in BASELINES.items() if v in variants]

    command = shlex.join([sys.executable, *sys.argv])
    python = "%s %s (%s, %s %s)" % (
        platform.python_implementation(),
        platform.python_version(),
        sys.executable,
        platform.system(),
        platform.machine(),
    )
    print("fork cost: fork + child exit + wait, as the parent sees it")
    print("python:  ", python)
    print("command: ", command)
    print(_bytecode.compile_package())
    if args.baseline is not None:
        print(_bytecode.compile_dir(Path(args.baseline) / "forksafe_logging"))
    print(
        "setup:    %d handlers on root + %d loggers, %d forks x %d rounds per variant, "
        "interleaved" % (args.handlers, LOGGERS, args.forks, args.rounds),
        flush=True,
    )

    per_round: Dict[str, List[List[int]]] = {v: [] for v in variants}
    reached: Dict[str, Any] = {}  # what an installed worker saw
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            result = run_worker(variant, args)
            per_round[variant].append(result["samples_ns"])
            if result["module"] and variant not in BASELINES:
                reached = result
        print("  round %d/%d done" % (round_index + 1, args.rounds), file=sys.stderr, flush=True)

    stats, ratios = print_report(variants, per_round)
    if reached:
        print("forksafe_logging: %s" % reached["module"])
        print("install() child mode in force: %s" % reached["child"])
        print("handlers the hooks reach (%s): %d" % (reached["variant"], reached["reached"]))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "python": python,
            "command": command,
            "forks": args.forks,
            "rounds": args.rounds,
            "handlers": args.handlers,
            "child": reached.get("child"),
            "stats": stats,
            "ratios": ratios,
            "samples_ns": per_round,
        }
        args.json.write_text(json.dumps(report) + "\n")
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
