"""The package's import graph: no cycle, and every import points down the layers.

The layers are those of docs/architecture.md. An import inside a function
counts like any other (it is an edge of the graph all the same), and says
on its line, or the line above, why it waits for the function to run; an
import under ``if TYPE_CHECKING:`` does not run, and does not count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

from conftest import TESTS

import forksafe_logging

PACKAGE = Path(forksafe_logging.__file__).resolve().parent

#: Lowest first: a module imports only modules of lower layers.
LAYERS: List[Set[str]] = [
    {"_state"},  # the process-wide state: every layer may read and write it
    # Pure helpers, importing nothing of the package but the state.
    {"_compat", "_settings", "_streams", "_wire", "_order", "_peers", "_structlog_locks",
     "_endpoint", "_article", "_hazard", "_requests", "_targets", "_frames", "_ring"},
    # Frames read back into records (the top); lines formatted for the fast path (a sender).
    {"_decode", "_lines", "_reproducible"},
    # Walking the logging configuration; dispatching a child's record; what a
    # sender keeps until confirmed; the fast path's plans.
    {"_reach", "_router", "_unconfirmed", "_fork_warning", "_prose", "_dial"},
    # when the top's records wait for the listener; naming the walk's finds;
    # what one look found; the fast path's plans
    {"_turns", "_naming", "_diagnosis", "_plans"},
    # the listener's connections: accept, handshake, frames read into records;
    # its rounds: dispatch in order, confirm
    {"_inbox", "_rounds"},
    {"_loop", "_door"},  # the listener thread's rounds, and its last one; accepting
    {"_server"},  # the listener: its parts, its thread's start, its lifetime
    {"_tree", "_detect"},  # which tree this process belongs to; fork-hazard detectors
    {"_channel"},  # a sender's connection to the listener
    {"handlers"},  # QueueHandler and QueueListener
    {"_forward", "_held", "_repair"},  # forwarding children; the held-lock warning; repairs
    {"_atfork"},  # the fork hooks
    {"_join", "_doctor"},  # joining a tree; the fork-hazard report
    {"_ledger"},  # what uninstall() undoes
    {"_install", "_demo"},  # the switches
    {"__init__", "structlog", "_startup", "_doctor_command"},  # what users and site import
    {"_cli"},
    {"__main__"},
]  # fmt: skip


def _layer_of() -> Dict[str, int]:
    return {module: n for n, layer in enumerate(LAYERS) for module in layer}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> List[Tuple[str, int, bool]]:
    """``(module, line, in a function)`` for each import of a module of the package."""
    found: List[Tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            names: List[str] = []
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module == "forksafe_logging":
                    names = [alias.name for alias in child.names]
                elif child.module.startswith("forksafe_logging."):
                    names = [child.module.split(".")[1]]
            elif isinstance(child, ast.Import):
                names = [
                    alias.name.split(".")[1]
                    for alias in child.names
                    if alias.name.startswith("forksafe_logging.")
                ]
            for name in names:
                found.append((name, child.lineno, in_function))
            function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, in_function or function)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _graph() -> Dict[str, Set[str]]:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for module in sorted(modules):
        graph[module] = {
            name for name, _, _ in _imports(PACKAGE / (module + ".py")) if name in modules
        }
    return graph


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """A cycle of the graph, as a path that comes back to its start; [] if none."""
    state: Dict[str, int] = {}
    path: List[str] = []

    def visit(module: str) -> List[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return []


def test_every_module_has_a_layer() -> None:
    """A new module is placed in a layer (here and in docs/architecture.md)."""
    placed = _layer_of()
    assert sorted(set(_graph()) - set(placed)) == []
    assert sorted(set(placed) - set(_graph())) == []


def test_no_import_cycle() -> None:
    """The import graph, imports inside functions included, has no cycle."""
    assert _cycle(_graph()) == []


def test_cycle_finder_finds_one() -> None:
    """Control: the check above would see a cycle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]


def test_imports_point_down() -> None:
    """Each module imports only modules of lower layers."""
    layer = _layer_of()
    upward = [
        "%s (layer %d) imports %s (layer %d)" % (module, layer[module], target, layer[target])
        for module, targets in _graph().items()
        for target in sorted(targets)
        if layer[target] >= layer[module]
    ]
    assert upward == []


def test_imports_inside_functions_say_why() -> None:
    """An import left inside a function has a comment on its line or the line above."""
    silent = []
    for path in sorted(PACKAGE.glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for _, lineno, in_function in _imports(path):
            if not in_function:
                continue
            here = lines[lineno - 1]
            above = lines[lineno - 2].strip() if lineno > 1 else ""
            if "#" not in here and not above.startswith("#"):
                silent.append("%s:%d: %s" % (path.name, lineno, here.strip()))
    assert silent == []


def test_architecture_page_lists_the_layers() -> None:
    """docs/architecture.md names every module, in the layers of this test."""
    page = (TESTS.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page[page.index("## Layers") : page.index("## The walk of one record")]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # after the header
    assert [row.split(" | ")[0] for row in rows] == ["| L%d" % n for n in range(len(LAYERS))]
    for row, layer in zip(rows, LAYERS):
        # Each row: | Ln | modules | what they are |
        assert row.count(" | ") == 2, row
        assert row.endswith(" |"), row
        listed = set(re.findall(r"`(\w+)`", row.split(" | ")[1]))
        assert listed == layer, row


#: A module or class past these is due to be split (issue #13: a reader
#: should be able to hold one in mind).
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 150


def test_modules_and_classes_stay_small() -> None:
    too_big = []
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_big.append("%s: %d lines" % (path.name, len(source.splitlines())))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_big.append("%s: class %s, %d lines" % (path.name, node.name, size))
    assert too_big == []
