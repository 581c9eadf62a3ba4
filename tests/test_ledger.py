"""The ledger of what the library changes: uninstall() leaves nothing of it, anywhere.

Each scenario takes a snapshot of everything the ledger's entries touch
before ``install()``, and again after ``uninstall()``, in the top and in a
forked child (one that logged, and one that did not): the two must be the
same objects, and no entry may say that something of ours is left.
"""

from __future__ import annotations

import re
from typing import Any, Set

import pytest
from conftest import TESTS

from forksafe_logging import _ledger

EXACT = """
    import logging, multiprocessing, os, sys, warnings
    from scenario_lib import forked, report
    import forksafe_logging
    from forksafe_logging import _ledger

    where = sys.argv[2]

    def snapshot():
        # Identities: after uninstall() the very objects of before, not equal copies.
        app = logging.getLogger("app")
        return {
            "logging._lock": id(logging._lock),
            "Logger.callHandlers": id(vars(logging.Logger)["callHandlers"]),
            "logging._handlerList": id(logging._handlerList),
            "shutdown's default": id(logging.shutdown.__defaults__[0]),
            "root handlers": [id(h) for h in logging.root.handlers],
            "app handlers": [id(h) for h in app.handlers],
            "app filters": [id(f) for f in app.filters],
            "warnings.filters": [repr(f) for f in warnings.filters],
            "environment": sorted(k for k in os.environ if k.startswith("FORKSAFE")),
            "multiprocessing config": sorted(multiprocessing.current_process()._config),
        }

    def changed(before, after):
        return {key: [before[key], after[key]] for key in before if before[key] != after[key]}

    def switch_off():
        left = [patch.what for patch in _ledger.left()]
        forksafe_logging.uninstall()
        return {"left": left, "after": [patch.what for patch in _ledger.left()],
                "changed": changed(before, snapshot())}

    logging.basicConfig(filename="out.log", level=logging.INFO)
    app = logging.getLogger("app")
    app.propagate = False
    app.addHandler(logging.FileHandler("app.log"))
    app.addFilter(logging.Filter("app"))
    before = snapshot()
    forksafe_logging.install(subprocesses=True)
    def in_child():
        if where == "child-logged":
            logging.info("from the child")
        return None if where == "top" else switch_off()

    # A fork with the listener running: 3.12+ adds its warning filter. The
    # child must exit with 0 (forked() checks).
    in_child_facts = forked(in_child)
    if where == "top":
        forksafe_logging.flush()
        report(**switch_off())
    else:
        report(**in_child_facts)
"""

SWITCH = "`logging._lock` and `Logger.callHandlers`"
LISTS = "Each logger's `handlers` and `filters` lists"
HANDLER_LIST = "`logging._handlerList`, `logging.shutdown`'s default"
CONFIG = '`multiprocessing.current_process()._config["forksafe_logging"]`'
SUBPROCESSES = '`os.environ["FORKSAFE_LOGGING_SUBPROCESSES"]`'
WARNINGS = "`warnings.filters`: one filter in front"
LISTENER = "The listener's thread"
PUBLISHED = '`os.environ["FORKSAFE_LOGGING_LISTENER"]`'
ORDER = "`Logger.callHandlers` in the top"

#: What each process has of ours before uninstall(), by design. The warning
#: filter is there or not by version (3.12 takes it out after the fork, 3.13+
#: at the next one, older versions never add it): allowed, not required.
EXPECTED = {
    # A forked child inherits the multiprocessing config and the environment;
    # the top's listener is not its own.
    "top": {CONFIG, SUBPROCESSES, LISTENER},
    "child-not-logged": {SWITCH, HANDLER_LIST, CONFIG, SUBPROCESSES, PUBLISHED},
    "child-logged": {LISTS, HANDLER_LIST, CONFIG, SUBPROCESSES, PUBLISHED, ORDER},
}


def _named(whats: Set[str]) -> Set[str]:
    """The ledger's names of those entries, matched by the text each contains."""
    found = set()
    for what in whats:
        (name,) = [patch.what for patch in _ledger.PATCHES if what in patch.what]
        found.add(name)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", sorted(EXPECTED))
def test_uninstall_leaves_nothing(scenario: Any, where: str) -> None:
    """After install(), a fork and uninstall(), every object the ledger touches is the one
    of before install(): in the top, in a child that logged, in one that did not."""
    facts = scenario.run(EXACT, args=[where]).facts
    left = set(facts["left"])
    expected = _named(EXPECTED[where])
    assert expected <= left, expected - left
    assert left - expected <= _named({WARNINGS}), left - expected
    assert facts["after"] == []
    assert facts["changed"] == {}


def test_every_entry_has_its_row_in_the_docs() -> None:
    """docs/architecture.md's table has a row for every entry, named as the entry is."""
    text = (TESTS.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text[text.index("## What the library changes") :]
    rows = {m.group(1).strip() for m in re.finditer(r"^\| (.+?) \| ", table, re.MULTILINE)}
    missing = [patch.what for patch in _ledger.PATCHES if patch.what not in rows]
    assert missing == []


NOT_OURS = """
    import logging, os, subprocess, sys
    from scenario_lib import forked, report
    import forksafe_logging
    from forksafe_logging import handlers

    case = sys.argv[2]
    facts = {}
    if case == "restarted":
        # install() starts a listener; something else stops it; a QueueHandler
        # made after uninstall() starts another, which is the program's.
        forksafe_logging.install()
        forksafe_logging.QueueListener().stop()
        forksafe_logging.uninstall()
        handler = handlers.QueueHandler()
        forksafe_logging.uninstall()
        from forksafe_logging import _server

        facts["running"] = _server.current() is not None
        facts["published"] = "FORKSAFE_LOGGING_LISTENER" in os.environ
    elif case == "child-of-handler-top":
        # No install(): a QueueHandler started the listener; a forked child's
        # uninstall() is harmless, as it is in the top.
        handlers.QueueHandler()
        before = vars(logging.Logger)["callHandlers"]
        def in_child():
            forksafe_logging.uninstall()
            return {"published": "FORKSAFE_LOGGING_LISTENER" in os.environ,
                    "same_call_handlers": vars(logging.Logger)["callHandlers"] is before}

        facts = forked(in_child)
    else:
        # A program started with the listener in its environment attaches,
        # then switches off: the variable it was given stays.
        forksafe_logging.install()
        code = ("import os, forksafe_logging; forksafe_logging.attach(); "
                "forksafe_logging.uninstall(); "
                "print('FORKSAFE_LOGGING_LISTENER' in os.environ)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=30)
        facts["published"] = out.stdout.strip() == "True"
        facts["stderr"] = out.stderr
    report(**facts)
"""


@pytest.mark.timeout(60)
def test_uninstall_stops_only_the_listener_install_started(scenario: Any) -> None:
    """A listener a QueueHandler started after install()'s was stopped keeps running."""
    facts = scenario.run(NOT_OURS, args=["restarted"]).facts
    assert facts["published"] is True
    assert facts["running"] is True


@pytest.mark.timeout(60)
def test_uninstall_in_child_of_a_handler_started_top_changes_nothing(scenario: Any) -> None:
    """Without install(), uninstall() in a forked child leaves the top's publication alone."""
    facts = scenario.run(NOT_OURS, args=["child-of-handler-top"]).facts
    assert facts == {"published": True, "same_call_handlers": True}


@pytest.mark.timeout(60)
def test_uninstall_after_attach_keeps_the_given_environment(scenario: Any) -> None:
    """A program that attach()ed keeps, after uninstall(), the variable it was started with."""
    facts = scenario.run(NOT_OURS, args=["attached"]).facts
    assert facts["published"] is True, facts["stderr"]
