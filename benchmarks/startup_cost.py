"""What the start-up hook costs every interpreter start while its switch is off.

``forksafe_logging.pth`` is read by ``site`` in every interpreter that
starts with the package installed. This builds two throw-away virtual
environments from the running Python, alike but for that one file, and
times ``python -c pass`` in each, alternating, so that the machine's noise
falls on both alike. The switch (``FORKSAFE_LOGGING_SUBPROCESSES``) is
unset; the package itself is not needed then, as the hook imports nothing.

Run ``python benchmarks/startup_cost.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HOOK = Path(__file__).resolve().parent.parent / "forksafe_logging.pth"


def _venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    return where / "bin" / "python"


def _purelib(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def _start(python: Path, env: Dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([str(python), "-c", "pass"], check=True, env=env)
    return time.perf_counter() - started


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORKSAFE_LOGGING_")}
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory() as tmp:
        bare = _venv(Path(tmp) / "bare")
        hooked = _venv(Path(tmp) / "hooked")
        shutil.copy(HOOK, _purelib(hooked) / HOOK.name)
        # The floor of any start-up hook that site runs: a .pth file whose one
        # line is executed (site compiles and runs each "import" line).
        floor = _venv(Path(tmp) / "floor")
        (_purelib(floor) / "floor.pth").write_text("import os\n")
        pythons = {"without": bare, "one line": floor, "with": hooked}
        times: Dict[str, List[float]] = {name: [] for name in pythons}
        for python in pythons.values():  # warm the file cache
            _start(python, env)
        for n in range(args.runs):
            # Each order and its reverse in turn: none goes first every time.
            order = list(pythons.items())
            for name, python in order if n % 2 else order[::-1]:
                times[name].append(_start(python, env))
        # What site does with the file, timed inside one interpreter: the
        # part of the difference that is the hook's, without the noise of a start.
        site_dir = Path(tmp) / "one"
        site_dir.mkdir()
        shutil.copy(HOOK, site_dir / HOOK.name)
        code = (
            "import site, time; n = 2000; t = time.perf_counter()\n"
            "for _ in range(n): site.addpackage(%r, %r, set())\n"
            "print((time.perf_counter() - t) / n)" % (str(site_dir), HOOK.name)
        )
        out = subprocess.run(
            [str(bare), "-c", code], check=True, env=env, capture_output=True, text=True
        )
        per_file = float(out.stdout)
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: statistics.quantiles(v, n=4) for k, v in times.items()}
    print("Python %s, %d starts each, alternating" % (sys.version.split()[0], args.runs))
    labels = {
        "without": "without the hook",
        "one line": "a .pth of one line, 'import os'",
        "with": "with the hook",
    }
    for name, label in labels.items():
        q1, _, q3 = spread[name]
        print(
            "  %-32s median %.2f ms (quartiles %.2f-%.2f)"
            % (label, med[name] * 1e3, q1 * 1e3, q3 * 1e3)
        )
    print("  with / without: %.3fx" % (med["with"] / med["without"]))
    print(
        "  one line / without: %.3fx (any hook that site runs)" % (med["one line"] / med["without"])
    )
    print(
        "  site reading the hook's file, switch off: %.1f us (%.2f%% of a start)"
        % (per_file * 1e6, 100 * per_file / med["without"])
    )
    print("\ncommand: python benchmarks/startup_cost.py %s" % " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
