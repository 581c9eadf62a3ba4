"""Draws the throughput chart of the performance page from ``docs/benchmarks.json``.

``benchmarks.json`` holds the published measurements (``python
benchmarks/throughput.py --json docs/benchmarks.json`` writes it); the SVG is
made at each build, into ``docs/_generated/`` (not kept in git), with the
standard library only.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any, Dict, List

LABELS = {
    "direct": "one process, FileHandler",
    "forksafe": "forksafe_logging",
    "forksafe-record": "forksafe_logging, no fast path",
    "forksafe-socket": "forksafe_logging, no ring",
    "cookbook": "cookbook (mp.Queue)",
    "loguru": "loguru enqueue=True",
    "mplogging": "multiprocessing-logging",
}
BAR_HEIGHT, GAP, LEFT, WIDTH = 18, 6, 210, 660


def svg(data: Dict[str, Any]) -> str:
    """The chart of every run in ``data`` (``{"runs": [...]}``, or one run alone)."""
    runs: List[Dict[str, Any]] = data.get("runs", [data])
    rows: List[str] = []
    y = 30
    top = max(
        max(r.values()) for run in runs for k, r in run.items() if k.startswith("throughput_")
    )
    for run in runs:
        for key in sorted(k for k in run if k.startswith("throughput_")):
            rows.append(
                '<text x="0" y="%d" font-weight="bold">Python %s, start method %s</text>'
                % (y, escape(run["python"]), escape(key.split("_", 1)[1]))
            )
            y += GAP + 4
            for variant, rate in run[key].items():
                length = (WIDTH - LEFT - 90) * rate / top
                fill = "#2a7ab0" if variant == "forksafe" else "#9bb7c9"
                rows.append(
                    '<text x="%d" y="%d" text-anchor="end">%s</text>'
                    '<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>'
                    '<text x="%.1f" y="%d">%s/s</text>'
                    % (LEFT - 8, y + 13, escape(LABELS.get(variant, variant)), LEFT, y, length,
                       BAR_HEIGHT, fill, LEFT + length + 6, y + 13, format(round(rate), ","))
                )  # fmt: skip
                y += BAR_HEIGHT + GAP
            y += 2 * GAP
    header = (
        '<text x="0" y="14">records per second, 4 workers logging %s records to one file</text>'
        % (format(runs[0]["records"], ","))
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
        'font-family="sans-serif" font-size="12">%s%s</svg>\n' % (WIDTH, y, header, "".join(rows))
    )


def _draw(app: Any) -> None:
    source = Path(app.srcdir)
    out = source / "_generated"
    out.mkdir(exist_ok=True)
    results = json.loads((source / "benchmarks.json").read_text())
    (out / "throughput.svg").write_text(svg(results))


def setup(app: Any) -> Dict[str, Any]:
    app.connect("builder-inited", _draw)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
