"""The wire format: what a record becomes on its way to the top, and back."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import PRELUDE, START_METHODS, Scenario

from forksafe_logging import _decode, _wire

pytestmark = pytest.mark.timeout(180)


def _record(msg: str = "m %s", args: Any = ("x",), **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("a.b", logging.INFO, "/src/app.py", 7, msg, args, None)
    record.__dict__.update(extra)
    return record


class TestWire:
    def _roundtrip(self, record: logging.LogRecord) -> logging.LogRecord:
        decoder = _decode.Decoder()
        key = _wire.static_key("", record)
        data = _wire.definition(1, key) + _wire.record_frame(1, _wire.message(record), record)
        out = []
        while data:
            (length,) = _wire.HEADER.unpack_from(data)
            decoded = decoder.feed(data[4 : 4 + length])
            if decoded is not None:
                out.append(decoded)
            data = data[4 + length :]
        assert len(out) == 1
        route, got = out[0]
        assert route == ""
        return got

    def test_fields_survive(self) -> None:
        """Name, level, place, times and plain extras come back as they were."""
        record = _record(user="ann", n=[1, {"k": None}], f=1.5)
        got = self._roundtrip(record)
        for field in ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno",
                      "funcName", "created", "msecs", "thread", "process"):  # fmt: skip
            assert getattr(got, field) == getattr(record, field), field
        assert got.getMessage() == "m x"
        assert (got.user, got.n, got.f) == ("ann", [1, {"k": None}], 1.5)

    def test_unplain_extras_become_repr(self) -> None:
        """An extra that is not plain data arrives as its repr; NaN is not JSON."""
        got = self._roundtrip(_record(s={1}, nan=float("nan"), t=(1, 2)))
        assert (got.s, got.nan, got.t) == ("{1}", "nan", "(1, 2)")

    def test_broken_format_still_arrives(self) -> None:
        """A message whose arguments do not fit is sent with both, not lost."""
        got = self._roundtrip(_record("%d", ("x",)))
        assert "message could not be formatted" in got.getMessage()

    @pytest.mark.parametrize(
        "payload",
        [b'R[1,"m",1.0,1.0,1.0,null,null,null]', b"X[]", b"D[1]", b"R{", b"R[1,2,3]", b"\xff"],
    )
    def test_garbage(self, payload: bytes) -> None:
        """Frames we never send (unknown number, tag, shape, bytes) are Garbage."""
        with pytest.raises(_decode.Garbage):
            _decode.Decoder().feed(payload)


class TestAnyRecord:
    BODY = (
        PRELUDE
        + """
import threading

received = []

class Keep(logging.Handler):
    def emit(self, record):
        received.append(record)

class Unpicklable(Exception):
    def __init__(self):
        super().__init__("cannot pickle me")
        self.lock = threading.Lock()

def work():
    log = logging.getLogger("odd name/ü\\n.x")
    lock = threading.Lock()
    log.info("args %s %r", lock, lambda: 1)
    try:
        raise Unpicklable()
    except Unpicklable:
        log.exception("failed")
    log.info("big %s", "y" * (10 << 20))
    log.info("surrogate \\udc80 and bytes %s", b"\\xff\\xfe")
    log.info("extras", extra={"plain": {"a": [1, 2.5, None, True, "s"]}, "obj": lock,
                               "aset": {1}, "num": 7})
    log.info("broken %d", "not a number")

if __name__ == "__main__":
    configure()
    logging.getLogger().addHandler(Keep())
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(60)
    forksafe_logging.flush(30)
    out = []
    for r in received:
        out.append({"name": r.name, "message": r.getMessage()[:200], "length": len(r.getMessage()),
                    "exc_text": r.exc_text, "plain": getattr(r, "plain", None),
                    "obj": getattr(r, "obj", None), "aset": getattr(r, "aset", None),
                    "num": getattr(r, "num", None)})
    report(exitcode=p.exitcode, records=out)
"""
    )

    @START_METHODS
    def test_odd_records_arrive(self, scenario: Scenario, method: str) -> None:
        """Unpicklable args and exceptions, 10 MB, surrogates, odd extras and names arrive."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        assert facts["exitcode"] == 0
        records = facts["records"]
        assert len(records) == 6
        assert {r["name"] for r in records} == {"odd name/ü\n.x"}
        args, exc, big, surrogate, extras, broken = records
        assert args["message"].startswith("args <unlocked _thread.lock object")
        assert "<function work.<locals>.<lambda>" in args["message"]
        assert exc["message"] == "failed"
        assert "Unpicklable: cannot pickle me" in exc["exc_text"]
        assert exc["exc_text"].startswith("Traceback (most recent call last)")
        assert big["length"] == len("big ") + (10 << 20)
        assert surrogate["message"] == "surrogate \udc80 and bytes b'\\xff\\xfe'"
        assert extras["plain"] == {"a": [1, 2.5, None, True, "s"]}
        assert extras["num"] == 7
        assert extras["obj"].startswith("<unlocked _thread.lock object")
        assert extras["aset"] == "{1}"
        assert "message could not be formatted" in broken["message"]


class TestStructure:
    BODY = (
        PRELUDE
        + """
class Json(logging.Formatter):
    def format(self, record):
        exc = self.formatException(record.exc_info) if record.exc_info else record.exc_text
        return json.dumps({"msg": record.getMessage(), "user": getattr(record, "user", None),
                           "ids": getattr(record, "ids", None), "exc": exc})

def work():
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("s").error("boom", exc_info=True, extra={"user": "ann", "ids": [1, 2]})

if __name__ == "__main__":
    configure()
    handler = logging.FileHandler("json.log")
    handler.setFormatter(Json())
    logging.getLogger().addHandler(handler)
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(60)
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("s").error("top", exc_info=True)
    forksafe_logging.flush(10)
    with open("json.log") as f:
        report(records=[json.loads(line) for line in f.read().split("\\n") if line.startswith("{")])
"""
    )

    @START_METHODS
    def test_json_formatter_sees_fields(self, scenario: Scenario, method: str) -> None:
        """Plain extras arrive as the same values, the traceback as text, for the formatter."""
        records = scenario.run(self.BODY, None, args=[method]).facts["records"]
        by_msg = {r["msg"]: r for r in records}
        assert by_msg["boom"]["user"] == "ann"
        assert by_msg["boom"]["ids"] == [1, 2]
        assert "ZeroDivisionError: division by zero" in by_msg["boom"]["exc"]
        # The top's own records keep exc_info itself.
        assert "ZeroDivisionError" in by_msg["top"]["exc"]
