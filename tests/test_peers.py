"""Libraries that hook logging in every process: a record reaches them once.

With the real sentry-sdk, its transport replaced by one that holds events
and appends them to a file when flushed (no network): every error logged
in a worker becomes one Sentry event, reported by the worker when its
Sentry is active (inherited through a fork, or initialized there) and sent
by the worker's exit at the latest, by the top process otherwise; and one
line in the top's file. gevent patching after the import.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import json
import logging
import sys
from typing import Any, List

import pytest
from conftest import Scenario

from forksafe_logging import _peers

SENTRY = """
    import json, logging, multiprocessing, os, sys
    from concurrent.futures import ProcessPoolExecutor
    import sentry_sdk
    from sentry_sdk.transport import Transport
    from scenario_lib import report
    import forksafe_logging

    EVENTS = os.path.abspath("events.jsonl")

    class Capture(Transport):
        # Like Sentry's HTTP transport, it holds events until it sends them,
        # at the latest when flushed; in the process whose Sentry captured them.
        def __init__(self, options=None):
            super().__init__(options)
            self.held = []

        def capture_envelope(self, envelope):
            for item in envelope.items:
                if item.type == "event":
                    entry = item.payload.json.get("logentry") or {}
                    self.held.append([os.getpid(), entry.get("formatted")])

        def flush(self, timeout, callback=None):
            held, self.held = self.held, []
            with open(EVENTS, "a") as f:
                for event in held:
                    f.write(json.dumps(event) + "\\n")

    def init_sentry():
        sentry_sdk.init(dsn="https://public@sentry.invalid/1", transport=Capture)

    def work(n):
        logging.getLogger("app.worker").error("boom %d", n)
        return os.getpid()

    if __name__ == "__main__":
        method, child_sentry = sys.argv[2], sys.argv[3]
        init_sentry()
        logging.basicConfig(filename="app.log", format="%(process)d %(message)s")
        forksafe_logging.install()
        context = multiprocessing.get_context(method)
        initializer = init_sentry if child_sentry == "init" else None
        with ProcessPoolExecutor(2, mp_context=context, initializer=initializer) as pool:
            pids = list(pool.map(work, range(20)))
        forksafe_logging.flush()
        report(top=os.getpid(), pids=pids)
"""


def _importable(name: str) -> bool:
    """Whether module ``name`` can be imported here (an optional test dependency)."""
    return importlib.util.find_spec(name) is not None


@pytest.mark.skipif(
    not _importable("sentry_sdk"), reason="sentry-sdk is not installed: pip install '.[e2e]'"
)
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("method", "child_sentry"),
    [("fork", "inherited"), ("spawn", "init"), ("forkserver", "init"),
     ("spawn", "none"), ("forkserver", "none")],
)  # fmt: skip
def test_sentry_reports_each_record_once(
    scenario: Scenario, method: str, child_sentry: str
) -> None:
    """One event per error, from the worker if its Sentry is active, else from the top."""
    facts = scenario.run(SENTRY, args=[method, child_sentry]).facts
    events = [
        json.loads(line) for line in (scenario.tmp_path / "events.jsonl").read_text().splitlines()
    ]
    messages = collections.Counter(message for _, message in events)
    assert messages == {"boom %d" % n: 1 for n in range(20)}
    reporters = {message: pid for pid, message in events}
    for n, worker in enumerate(facts["pids"]):
        expected = facts["top"] if child_sentry == "none" else worker
        assert reporters["boom %d" % n] == expected
    lines = (scenario.tmp_path / "app.log").read_text().splitlines()
    assert sorted(lines) == sorted("%d boom %d" % (pid, n) for n, pid in enumerate(facts["pids"]))


class _Collect(logging.Handler):
    def __init__(self, into: List[str], level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append("%s:%s:%s" % (self.name, record.name, record.getMessage()))


def _walk(handle: Any, monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """What a small logger tree's handlers get from a few records, handed in by ``handle``."""
    seen: List[str] = []
    manager = logging.Manager(logging.RootLogger(logging.WARNING))
    manager.loggerClass = None
    root = manager.root
    a = logging.Logger("a")
    a.manager, a.parent = manager, root
    ab = logging.Logger("a.b")
    ab.manager, ab.parent = manager, a
    quiet = logging.Logger("quiet")
    quiet.manager, quiet.parent = manager, root
    for logger, name, level in ((root, "root", 0), (a, "a", logging.ERROR), (ab, "ab", 0)):
        handler = _Collect(seen, level)
        handler.name = name
        logger.addHandler(handler)
    a.propagate = False
    ab.addFilter(lambda r: "drop" not in r.getMessage())
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(logging, "lastResort", None)
    for logger, message, level in (
        (ab, "both", logging.ERROR),
        (ab, "only ab", logging.WARNING),
        (ab, "drop me", logging.ERROR),
        (a, "a only", logging.ERROR),
        (quiet, "to root", logging.ERROR),
    ):
        handle(logger, logger.makeRecord(logger.name, level, "f", 1, message, (), None))
    no_handler = logging.Logger("nobody")
    no_handler.manager, no_handler.propagate = manager, False
    handle(no_handler, no_handler.makeRecord("nobody", logging.ERROR, "f", 1, "lost", (), None))
    return [*seen, stderr.getvalue()]


def test_plain_walk_is_the_standard_librarys(monkeypatch: pytest.MonkeyPatch) -> None:
    """_peers.handle reaches the handlers Logger.handle reaches: levels, filters, propagate."""
    ours = _walk(_peers.handle, monkeypatch)
    theirs = _walk(lambda logger, record: logger.handle(record), monkeypatch)
    assert ours == theirs
    assert "ab:a.b:both" in ours
    assert "a:a.b:both" in ours
    assert ours[-1] == 'No handlers could be found for logger "nobody"\n'


GEVENT = """
    import logging, os
    import forksafe_logging  # before the patching, as a program's imports often are
    from gevent import monkey
    monkey.patch_all()  # takes select.epoll away
    from scenario_lib import report

    logging.basicConfig(filename="app.log", level=logging.INFO, format="%(process)d %(message)s")
    forksafe_logging.install()
    pid = os.fork()
    if pid == 0:
        logging.info("child")
        os._exit(0)
    os.waitpid(pid, 0)
    logging.info("top")
    forksafe_logging.flush()
    report(child=pid, top=os.getpid())
"""


@pytest.mark.skipif(
    not _importable("gevent"), reason="gevent is not installed: pip install '.[e2e]'"
)
@pytest.mark.timeout(60)
def test_gevent_patched_after_import(scenario: Scenario) -> None:
    """gevent's patch_all() after the import: the listener starts, and orders the lines."""
    facts = scenario.run(GEVENT).facts
    lines = (scenario.tmp_path / "app.log").read_text().splitlines()
    assert lines == ["%d child" % facts["child"], "%d top" % facts["top"]]


def test_plain_walk_passes_wrappers_not_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrapper put on Logger.callHandlers is passed; a program's subclass keeps its own."""
    wrapped: List[str] = []
    stock = logging.Logger.callHandlers

    def wrapper(self: logging.Logger, record: logging.LogRecord) -> None:
        wrapped.append(record.getMessage())
        stock(self, record)

    monkeypatch.setattr(logging.Logger, "callHandlers", wrapper)
    got: List[str] = []
    plain = logging.Logger("plain")
    handler = _Collect(got)
    handler.name = "h"
    plain.addHandler(handler)
    _peers.handle(plain, plain.makeRecord("plain", logging.ERROR, "f", 1, "one", (), None))
    assert (got, wrapped) == (["h:plain:one"], [])

    class Own(logging.Logger):
        def callHandlers(self, record: logging.LogRecord) -> None:
            got.append("own:" + record.getMessage())

    own = Own("own")
    _peers.handle(own, own.makeRecord("own", logging.ERROR, "f", 1, "two", (), None))
    _peers.call_handlers(own, own.makeRecord("own", logging.ERROR, "f", 1, "three", (), None))
    assert got[1:] == ["own:two", "own:three"]
