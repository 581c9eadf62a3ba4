"""End to end: ddtrace's logging integration, a pool's workers, ``install()``.

With the real ddtrace (dd-trace-py), its logging integration on in every
process (``ddtrace.patch(logging=True)`` at module level, which a ``spawn``
or ``forkserver`` worker runs again when it imports the main module), a
filter that drops every finished trace, and an agent address that is a Unix
socket nobody listens on: nothing is sent anywhere. The top process opens a
span and logs in it while a ``ProcessPoolExecutor``'s workers each run their
tasks in spans of their own and log there. The top's two file handlers,
one ``%``-style and one ``{``-style, name ddtrace's attributes and stamp
the pid of the process that writes the line.

Each task's line must be in each file once, written by the top, with the
ids the worker saw in its span (not the top's). Without the library, forked
workers write through the inherited handlers themselves and spawned ones
write nowhere: each case fails without it.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Dict, List

import pytest
from conftest import START_METHODS, Scenario

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("ddtrace") is None,
        reason="ddtrace is not installed: pip install '.[e2e]'",
    ),
    pytest.mark.timeout(90),
]

TASKS = 8

SCRIPT = """
    import ddtrace

    # At module level: a spawn or forkserver worker turns it on when it
    # imports this file as __mp_main__.
    ddtrace.patch(logging=True)

    import logging, multiprocessing, os, sys
    from concurrent.futures import ProcessPoolExecutor
    from ddtrace.trace import TraceFilter, tracer
    import forksafe_logging
    from scenario_lib import install_from_argv, report, writer_file_handler

    class DropAll(TraceFilter):
        # No trace is sent (there is no agent): a finished trace is dropped.
        def process_trace(self, trace):
            return None

    tracer.configure(trace_processors=[DropAll()])

    FIELDS = ("writer", "process", "name", "dd.trace_id", "dd.span_id",
              "dd.service", "dd.env", "dd.version", "message")

    def seen(span):
        # What ddtrace puts on a record made here and now.
        ids = tracer.get_log_correlation_context()
        return dict(pid=os.getpid(), span_id=str(span.span_id), ids=ids)

    def work(n):
        with tracer.trace("worker.task") as span:
            logging.getLogger("app.worker").info("task %d", n)
            return dict(n=n, **seen(span))

    if __name__ == "__main__":
        method = sys.argv[2]
        logging.root.setLevel(logging.INFO)
        logging.root.addHandler(
            writer_file_handler("percent.log", "|".join("%%(%s)s" % f for f in FIELDS), "%"))
        # "{dd.trace_id}" is str.format's attribute access: ddtrace's wrapper
        # of StrFormatStyle._format gives the record a "dd" object to read
        # while it is formatted, from its "dd.trace_id" and the others.
        logging.root.addHandler(
            writer_file_handler("brace.log", "|".join("{%s}" % f for f in FIELDS), "{"))
        install_from_argv()
        with tracer.trace("top") as span:
            logging.getLogger("app.top").info("top before")
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
                tasks = list(pool.map(work, range(int(sys.argv[3]))))
            logging.getLogger("app.top").info("top after")
            top = seen(span)
        forksafe_logging.flush(30)
        report(top=top, tasks=tasks)
"""

ENV = {
    "DD_SERVICE": "forksafe-e2e",
    "DD_ENV": "test",
    "DD_VERSION": "1.2.3",
    "DD_LOGS_INJECTION": "true",
    # A socket that does not exist: nothing leaves the machine, and the
    # filter above leaves nothing to send anyway.
    "DD_TRACE_AGENT_URL": "unix:///nonexistent/forksafe-e2e-apm.socket",
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
}


def _rows(text: str) -> List[List[str]]:
    """The file's lines, split into the formats' fields (the message last)."""
    return [line.split("|", 8) for line in text.splitlines()]


def _line(pid: int, name: str, ids: Dict[str, str], message: str) -> List[str]:
    """A line's fields after the writer's pid, for a record made under ``ids``."""
    keys = ("dd.trace_id", "dd.span_id", "dd.service", "dd.env", "dd.version")
    return [str(pid), name, *(ids[key] for key in keys), message]


@START_METHODS
def test_worker_records_keep_their_own_trace_ids(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """Each worker's line once, written by the top, with the worker's ids, % and {-style."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    outcome = scenario.run(SCRIPT, {}, args=[method, str(TASKS)])
    facts: Dict[str, Any] = outcome.facts
    assert "Logging error" not in outcome.stderr, outcome.stderr
    top, tasks = facts["top"], facts["tasks"]
    assert sorted(task["n"] for task in tasks) == list(range(TASKS))
    assert top["pid"] not in {task["pid"] for task in tasks}
    # What ddtrace reported in each span is that span's: its span id, a trace
    # id, the configured service, environment and version. Every task ran in
    # a span of its own, not the top's. (A forked worker's first span may be
    # a child of the top's, in the top's trace: the span ids tell them apart.)
    for seen in [top, *tasks]:
        ids = seen["ids"]
        assert ids["dd.span_id"] == seen["span_id"]
        assert ids["dd.trace_id"] not in ("", "0")
        assert [ids["dd.service"], ids["dd.env"], ids["dd.version"]] == [
            ENV["DD_SERVICE"],
            ENV["DD_ENV"],
            ENV["DD_VERSION"],
        ]
    span_ids = [seen["span_id"] for seen in [top, *tasks]]
    assert len(set(span_ids)) == len(span_ids)

    expected = [
        _line(top["pid"], "app.top", top["ids"], "top before"),
        _line(top["pid"], "app.top", top["ids"], "top after"),
        *(_line(task["pid"], "app.worker", task["ids"], "task %d" % task["n"]) for task in tasks),
    ]
    for log in ("percent.log", "brace.log"):
        rows = _rows((scenario.tmp_path / log).read_text())
        # Written by the top process only.
        assert {writer for writer, *_ in rows} == {str(top["pid"])}, log
        # Each line once, with the ids of the span it was logged in.
        assert sorted(line for _, *line in rows) == sorted(expected), log
