"""QueueHandler in one process, and in dictConfig: its arguments and its misuse."""

from __future__ import annotations

import logging
import logging.config
from typing import Any, Dict, List

import pytest
from conftest import Scenario

import forksafe_logging

pytestmark = pytest.mark.timeout(30)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _record(msg: str = "m %s", args: Any = ("x",), **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("a.b", logging.INFO, "/src/app.py", 7, msg, args, None)
    record.__dict__.update(extra)
    return record


class TestQueueHandler:
    def test_top_process_hands_records_to_handlers(self) -> None:
        """In the top process a record goes straight to the named handlers, once each."""
        a, b = Keep(), Keep()
        b.setLevel(logging.ERROR)
        handler = forksafe_logging.QueueHandler([a, b])
        handler.handle(_record())
        assert [r.getMessage() for r in a.records] == ["m x"]
        assert b.records == []  # respect_handler_level

    def test_names_must_exist_outside_dict_config(self) -> None:
        """A name that no configured handler has is refused at once."""
        with pytest.raises(ValueError, match="no handler named 'nope' is configured"):
            forksafe_logging.QueueHandler(["nope"])

    @pytest.mark.parametrize("bad", [3, None, [object()]])
    def test_handler_types(self, bad: Any) -> None:
        """Only handlers and names are accepted as targets."""
        with pytest.raises(TypeError, match=r"handlers must be logging\.Handler objects"):
            forksafe_logging.QueueHandler(bad)

    @pytest.mark.parametrize("timeout", [0, -1, float("inf")])
    def test_timeout_value(self, timeout: float) -> None:
        """timeout must be a positive, finite number of seconds, or None."""
        with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
            forksafe_logging.QueueHandler(timeout=timeout)

    def test_timeout_type(self) -> None:
        """timeout must be a number."""
        with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
            forksafe_logging.QueueHandler(timeout="1")  # type: ignore[arg-type]

    def test_flush_without_a_listener(self) -> None:
        """flush() in a process without a listener has nothing to wait for."""
        assert forksafe_logging.flush(1) is True


def _queue(*names: str) -> Dict[str, Any]:
    return {"class": "forksafe_logging.QueueHandler", "handlers": list(names)}


def _keep(keep: Keep) -> Dict[str, Any]:
    return {"()": lambda: keep}


def _dict_config(handlers: Dict[str, Any], root: str) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            # Loggers made by earlier tests would be disabled; these log through root.
            "disable_existing_loggers": False,
            "handlers": handlers,
            "root": {"handlers": [root], "level": "INFO"},
        }
    )


def _refused(handlers: Dict[str, Any], root: str, culprit: str, problem: str) -> None:
    """dictConfig raises, naming ``culprit``, and the cause says ``problem``."""
    with pytest.raises(ValueError, match="Unable to configure handler '%s'" % culprit) as info:
        _dict_config(handlers, root)
    assert isinstance(info.value.__cause__, ValueError)
    assert problem in str(info.value.__cause__)


class TestDictConfig:
    def test_names_itself(self) -> None:
        """A QueueHandler naming itself is refused by dictConfig, not by the first record."""
        _refused({"q": _queue("q")}, "q", "q", "QueueHandler 'q' names itself in its handlers")

    @pytest.mark.parametrize(
        ("handlers", "culprit", "cycle"),
        [
            ({"a": _queue("b"), "b": _queue("a")}, "b", "'b' -> 'a' -> 'b'"),
            # The member made last (in name order) is the one that sees the cycle.
            (
                {"x": _queue("c"), "c": _queue("m"), "m": _queue("x")},
                "x",
                "'x' -> 'c' -> 'm' -> 'x'",
            ),
            (
                {"z": _queue("a", "y"), "a": {"class": "logging.NullHandler"}, "y": _queue("z")},
                "z",
                "'z' -> 'y' -> 'z'",
            ),
        ],
        ids=["two", "three", "beside-a-handler"],
    )
    def test_cycle(self, handlers: Dict[str, Any], culprit: str, cycle: str) -> None:
        """QueueHandlers that name each other round a cycle are refused, the cycle spelt out."""
        _refused(handlers, "a" if "a" in handlers else "x", culprit, cycle)

    @pytest.mark.parametrize(
        ("file", "typo", "configured"),
        [("afile", "afiel", "'afile', 'queue'"), ("zfile", "zfiel", "'queue', 'zfile'")],
        ids=["defined-before", "defined-after"],
    )
    def test_misspelt_name(self, file: str, typo: str, configured: str) -> None:
        """A name this dictConfig does not configure is refused, with the names it does."""
        _refused(
            {file: _keep(Keep()), "queue": _queue(typo)},
            "queue",
            "queue",
            "no handler named %r in this dictConfig; it configures %s" % (typo, configured),
        )

    @pytest.mark.parametrize("spec", [{}, {"handlers": []}], ids=["missing", "empty"])
    def test_no_handlers_in_the_top_process(self, spec: Dict[str, Any]) -> None:
        """In the process that runs the listener, a QueueHandler without targets is refused."""
        _refused(
            {"queue": {"class": "forksafe_logging.QueueHandler", **spec}},
            "queue",
            "queue",
            "QueueHandler 'queue': \"handlers\" is missing or empty",
        )

    @pytest.mark.parametrize(
        "names",
        [("aqueue", "zfile"), ("zqueue", "afile")],
        ids=["defined-after", "defined-before"],
    )
    def test_named_handler_in_any_order(self, names: Any) -> None:
        """A handler defined after or before the QueueHandler that names it gets its records."""
        queue, file = names
        keep = Keep()
        _dict_config({queue: _queue(file), file: _keep(keep)}, queue)
        logging.getLogger().info("hello")
        assert [r.getMessage() for r in keep.records] == ["hello"]

    @pytest.mark.parametrize(
        "handlers",
        [
            # a -> b -> c -> file, every one naming one made after it.
            {"a": _queue("b"), "b": _queue("c"), "c": _queue("file")},
            # The other way round: each names one made before it.
            {"a": _queue("file"), "b": _queue("a"), "c": _queue("b")},
            # Two ways to the same QueueHandler are not a cycle.
            {"a": _queue("file"), "b": _queue("a"), "c": _queue("a", "b")},
        ],
        ids=["forward", "backward", "diamond"],
    )
    def test_queue_handlers_in_a_chain(self, handlers: Dict[str, Any]) -> None:
        """A QueueHandler may name another one: records pass along, once per way."""
        keep = Keep()
        root = "c"
        _dict_config({**handlers, "file": _keep(keep)}, root)
        logging.getLogger().info("along")
        ways = 2 if handlers["c"]["handlers"] == ["a", "b"] else 1
        assert [r.getMessage() for r in keep.records] == ["along"] * ways

    CHILD = """
import json, logging, logging.config, multiprocessing, sys
import forksafe_logging
from scenario_lib import report

TOP = {
    "version": 1,
    "formatters": {"plain": {"format": "%(processName)s %(message)s"}},
    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "out.log", "formatter": "plain"},
        "queue": {"class": "forksafe_logging.QueueHandler", "handlers": ["file"]},
    },
    "root": {"handlers": ["queue"], "level": "INFO"},
}

def child_config(queue):
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"queue": queue},
        "root": {"handlers": ["queue"], "level": "INFO"},
    }

def work():
    try:
        logging.config.dictConfig(child_config(
            {"class": "forksafe_logging.QueueHandler", "handlers": ["fiel"]}))
    except ValueError as exc:
        typo = str(exc.__cause__)
    else:
        typo = None
    # No handlers of its own: it sends to the top's "queue", which has them.
    logging.config.dictConfig(child_config({"class": "forksafe_logging.QueueHandler"}))
    logging.info("from the child")
    with open("child.json", "w") as f:
        json.dump({"typo": typo}, f)

if __name__ == "__main__":
    forksafe_logging.install()
    logging.config.dictConfig(TOP)
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work, name="child")
    p.start()
    p.join(60)
    forksafe_logging.flush(10)
    with open("out.log") as f, open("child.json") as g:
        report(exitcode=p.exitcode, lines=f.read().splitlines(), **json.load(g))
"""

    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
    def test_child_may_have_no_handlers(self, scenario: Scenario, method: str) -> None:
        """A child's QueueHandler needs no handlers: it sends to the top's of its name."""
        facts = scenario.run(self.CHILD, None, args=[method]).facts
        assert facts["exitcode"] == 0
        assert facts["lines"] == ["child from the child"]
        # A name its own dictConfig does not configure is refused there too.
        assert "no handler named 'fiel' in this dictConfig" in facts["typo"]
