"""QueueHandler in one process: its arguments, its misuse, and the wire format's checks."""

from __future__ import annotations

import logging
from typing import Any, List

import pytest

import forksafe_logging
from forksafe_logging import _wire

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


class TestWire:
    def _roundtrip(self, record: logging.LogRecord) -> logging.LogRecord:
        decoder = _wire.Decoder()
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
        with pytest.raises(_wire.Garbage):
            _wire.Decoder().feed(payload)


class TestListenerSocket:
    def test_long_tmpdir(self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """Where sockets are files: a TMPDIR too long for a socket path falls back to /tmp."""
        import os
        import tempfile

        from forksafe_logging import _server

        long_dir = tmp_path / ("d" * 100)
        long_dir.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(long_dir))
        monkeypatch.setattr(_server, "ABSTRACT", False)
        listener = forksafe_logging.QueueListener()
        assert os.path.dirname(os.path.dirname(listener.address)) == "/tmp"
        assert os.stat(os.path.dirname(listener.address)).st_mode & 0o777 == 0o700
