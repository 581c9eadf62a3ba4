"""The fast path: a sender formats the lines, the top writes them, byte for byte as before.

The record path is the reference: a record sent as an ``R`` frame, rebuilt by
the listener and formatted by the top's handler. The fast path must give the
same line for every field a format can name.
"""

from __future__ import annotations

import asyncio
import copy
import io
import logging
import logging.handlers
import sys
import time
from typing import Any, Callable, List, Optional

import pytest

from forksafe_logging import _decode, _lines, _reproducible, _wire

EVERY_FIELD = (
    "%(name)s|%(levelno)d|%(levelname)s|%(pathname)s|%(filename)s|%(module)s|%(lineno)d|"
    "%(funcName)s|%(created)f|%(asctime)s|%(msecs)d|%(relativeCreated)d|%(thread)d|"
    "%(threadName)s|%(process)d|%(processName)s|%(message)s"
)


def _record(
    msg: str = "user %s did %s",
    args: Any = ("al\u00efce", "l\udcffgin"),
    exc_info: Any = None,
    stack_info: Optional[str] = None,
) -> logging.LogRecord:
    return logging.getLogger("fast.path").makeRecord(
        "fast.path", logging.INFO, __file__, 42, msg, args, exc_info, "caller", None, stack_info
    )


def _through_record_path(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The line the top writes today: R frame, listener's rebuild, the top's formatter."""
    key = _wire.static_key("", record)
    decoder = _decode.Decoder()
    decoder.feed(_wire.definition(7, key)[4:])
    frame = _wire.record_frame(7, _wire.message(record), record)
    decoded = decoder.feed(frame[4:])
    assert decoded is not None
    return formatter.format(decoded[1])


def _through_fast_path(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The line a sender formats with the plan the top offers for ``formatter``."""
    spec = _reproducible.spec(formatter)
    assert spec is not None, "no plan for this formatter"
    zone = _lines.time_zone() if spec[3] == "localtime" else None
    accepted = _lines.accept(["plan", 3, "fast.path", 20, [spec], list(sys.version_info[:2]), zone])
    assert accepted is not None
    made = accepted[1].lines(record)
    assert made is not None, "the record went the usual way"
    frame = accepted[1].frame(7, made)
    assert frame is not None
    payload = frame[4:]
    head = _decode.fast_head(payload)
    assert head[4] == 3  # the plan's number
    parts, _ = _decode.fast_parts(payload, 1)
    line = parts[0]
    assert line is not None
    return line.decode("utf-8", "surrogatepass")


def _both(make: Callable[[], logging.Formatter], record: Callable[[], logging.LogRecord]) -> None:
    # Formatting changes a record: each path formats a copy of the same one.
    first = record()
    second = copy.copy(first)
    expected = _through_record_path(make(), first)
    assert _through_fast_path(make(), second) == expected


@pytest.mark.parametrize(
    ("fmt", "style"),
    [
        (EVERY_FIELD, "%"),
        (
            EVERY_FIELD.replace("%(", "{")
            .replace(")s", "}")
            .replace(")d", "}")
            .replace(")f", ":f}"),
            "{",
        ),
        ("{asctime} {levelname:>8} {process:06d} {message!r}", "{"),
        ("$asctime ${levelname} $name: $message", "$"),
        (logging.BASIC_FORMAT, "%"),
        ("%(message)s", "%"),
    ],
)
def test_every_field_as_the_top_writes_it(fmt: str, style: str) -> None:
    _both(lambda: logging.Formatter(fmt, style=style), _record)  # type: ignore[arg-type]


@pytest.mark.parametrize("datefmt", [None, "%Y-%m-%dT%H:%M:%S%z", "%d/%b/%Y %a %j"])
@pytest.mark.parametrize("converter", [time.localtime, time.gmtime])
def test_asctime_with_datefmt_and_converter(datefmt: Optional[str], converter: Any) -> None:
    def make() -> logging.Formatter:
        formatter = logging.Formatter("%(asctime)s %(msecs)03d %(message)s", datefmt)
        formatter.converter = converter  # type: ignore[method-assign]
        return formatter

    _both(make, _record)


def test_default_time_formats_set_on_the_formatter() -> None:
    def make() -> logging.Formatter:
        formatter = logging.Formatter("%(asctime)s %(message)s")
        formatter.default_time_format = "%H:%M:%S"
        formatter.default_msec_format = "%s.%03d"
        return formatter

    _both(make, _record)


def test_times_in_the_same_second_and_the_next() -> None:
    """The sender keeps the last second's text: it must not outlive the second."""
    spec = _reproducible.spec(logging.Formatter("%(asctime)s"))
    plan = _lines.accept(["plan", 1, "x", 20, [spec], list(sys.version_info[:2]),
                          _lines.time_zone()])  # fmt: skip
    assert plan is not None
    formatter = plan[1].formatters[0]
    reference = logging.Formatter("%(asctime)s")
    for created in (1700000000.001, 1700000000.999, 1700000001.0, 1700000000.5, 1.5):
        record = _record()
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert formatter.format(record) == reference.format(record)


def test_traceback_and_stack() -> None:
    try:
        raise ValueError("bad \u00e9")
    except ValueError:
        exc_info = sys.exc_info()
    stack = "Stack (most recent call last):\n  File 'x.py', line 1"
    _both(logging.Formatter, lambda: _record(exc_info=exc_info))
    _both(logging.Formatter, lambda: _record(stack_info=stack))
    _both(logging.Formatter, lambda: _record(exc_info=exc_info, stack_info=stack))
    _both(lambda: logging.Formatter("%(message)s\n"), lambda: _record(exc_info=exc_info))


@pytest.mark.skipif(sys.version_info < (3, 12), reason="taskName is 3.12+")
def test_task_name() -> None:
    async def made_in_a_task() -> logging.LogRecord:
        return _record()

    def in_task() -> logging.LogRecord:
        return asyncio.run(made_in_a_task())

    assert in_task().taskName is not None  # type: ignore[attr-defined]
    _both(lambda: logging.Formatter("%(taskName)s %(message)s"), in_task)
    _both(lambda: logging.Formatter("%(taskName)s %(message)s"), _record)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="defaults are 3.10+")
def test_defaults() -> None:
    _both(
        lambda: logging.Formatter(  # type: ignore[call-arg]
            "%(tenant)s %(message)s", defaults={"tenant": "none"}
        ),
        _record,
    )


def test_records_that_go_the_usual_way() -> None:
    """Extras, a message not a string, a failing format: no F frame, the record untouched."""
    spec = _reproducible.spec(logging.Formatter("%(message)s"))
    accepted = _lines.accept(["plan", 1, "x", 20, [spec], list(sys.version_info[:2]), None])
    assert accepted is not None
    plan = accepted[1]
    with_extra = _record()
    with_extra.user = "bob"  # type: ignore[attr-defined]
    assert plan.lines(with_extra) is None
    assert plan.lines(_record(msg={"event": "x"}, args=())) is None  # type: ignore[arg-type]
    bad = _record(msg="%d", args=("not a number",))
    assert plan.lines(bad) is None
    odd_time = _record()
    odd_time.created = 1700000000  # an int, from a record factory
    assert plan.lines(odd_time) is None
    assert "message" not in bad.__dict__
    assert "asctime" not in bad.__dict__


class _Subclass(logging.Formatter):
    pass


def _unusable_formatters() -> List[logging.Formatter]:
    patched = logging.Formatter("%(message)s")
    patched.formatTime = lambda record, datefmt=None: "x"  # type: ignore[method-assign]
    odd_converter = logging.Formatter("%(asctime)s")
    odd_converter.converter = lambda t: time.localtime(t + 3600)  # type: ignore[method-assign]
    return [
        _Subclass("%(message)s"),
        patched,
        odd_converter,
        logging.Formatter("%(msg)s"),  # the listener's record has the merged message
        logging.Formatter("%(args)s %(message)s"),
        logging.Formatter("%(exc_text)s %(message)s"),
        logging.Formatter("%(user)s %(message)s"),  # an extra field
        logging.Formatter("{message:{width}}", style="{"),
    ]


@pytest.mark.parametrize("formatter", _unusable_formatters(), ids=repr)
def test_formatters_a_sender_cannot_reproduce(formatter: logging.Formatter) -> None:
    assert _reproducible.spec(formatter) is None


@pytest.fixture
def fresh_logger() -> Any:
    """A logger of its own; the root's handlers are put back afterwards (see :func:`_bare_root`)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    logger = logging.getLogger("fast.plans.%d" % time.monotonic_ns())
    yield logger
    root.handlers = saved
    logger.handlers = []


def _bare_root() -> None:
    """No handler on the root: pytest adds its own for each test's call, after the fixtures."""
    logging.getLogger().handlers = []


def test_plan_follows_the_logger_tree(fresh_logger: logging.Logger) -> None:
    _bare_root()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    fresh_logger.addHandler(handler)
    fresh_logger.setLevel(logging.INFO)
    assert _reproducible.targets(fresh_logger.name, logging.INFO) == [handler]
    assert _reproducible.targets(fresh_logger.name + ".child.of.it", logging.INFO) == [handler]
    assert _reproducible.targets(fresh_logger.name, logging.DEBUG) is None  # below the level
    other = logging.StreamHandler(io.StringIO())
    other.setLevel(logging.ERROR)
    logging.getLogger().addHandler(other)
    assert _reproducible.targets(fresh_logger.name, logging.INFO) == [handler]
    assert _reproducible.targets(fresh_logger.name, logging.ERROR) == [handler, other]
    fresh_logger.propagate = False
    assert _reproducible.targets(fresh_logger.name, logging.ERROR) == [handler]


def _unusable(logger: logging.Logger) -> List[Callable[[], Any]]:
    """Changes to a logger with a plain StreamHandler that each make a plan impossible."""

    def add_filter_to_logger() -> Any:
        logger.addFilter(lambda r: True)

    def add_filter_to_handler() -> Any:
        logger.handlers[0].addFilter(lambda r: True)

    def custom_handler() -> Any:
        logger.addHandler(logging.handlers.MemoryHandler(10))

    def same_file_twice() -> Any:
        logger.addHandler(logging.StreamHandler(logger.handlers[0].stream))  # type: ignore[attr-defined]

    def no_handler() -> Any:
        logger.handlers = []  # logging.lastResort's

    def instance_emit() -> Any:
        logger.handlers[0].emit = lambda record: None  # type: ignore[method-assign]

    return [add_filter_to_logger, add_filter_to_handler, custom_handler, same_file_twice,
            no_handler, instance_emit]  # fmt: skip


@pytest.mark.parametrize("index", range(6))
def test_what_makes_a_plan_impossible(fresh_logger: logging.Logger, index: int) -> None:
    _bare_root()
    fresh_logger.addHandler(logging.StreamHandler(io.StringIO()))
    assert _reproducible.targets(fresh_logger.name, logging.WARNING)
    _unusable(fresh_logger)[index]()
    assert _reproducible.targets(fresh_logger.name, logging.WARNING) is None


def test_patched_logging_gets_no_plan(
    fresh_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sentry, ddtrace and others wrap logging's methods: the listener must go through them."""
    _bare_root()
    fresh_logger.addHandler(logging.StreamHandler(io.StringIO()))
    original = logging.Handler.handle

    def wrapped(self: logging.Handler, record: logging.LogRecord) -> Any:
        return original(self, record)

    monkeypatch.setattr(logging.Handler, "handle", wrapped)
    assert _reproducible.targets(fresh_logger.name, logging.WARNING) is None


def test_facts_change_with_the_configuration(fresh_logger: logging.Logger) -> None:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("A %(message)s"))
    fresh_logger.addHandler(handler)
    name = fresh_logger.name + ".child"
    before = _reproducible.facts(name, logging.INFO)
    assert _reproducible.facts(name, logging.INFO) == before
    changes: List[Callable[[], Any]] = [
        lambda: handler.setFormatter(logging.Formatter("B %(message)s")),
        lambda: setattr(handler.formatter, "datefmt", "%H"),
        lambda: handler.setLevel(logging.ERROR),
        lambda: fresh_logger.setLevel(logging.ERROR),
        lambda: logging.getLogger().addHandler(logging.NullHandler()),
        lambda: fresh_logger.addHandler(logging.NullHandler()),
        lambda: setattr(fresh_logger, "propagate", False),
        lambda: logging.disable(logging.CRITICAL),
        lambda: logging.getLogger(name),  # the record's own logger, made
    ]
    try:
        for change in changes:
            change()
            after = _reproducible.facts(name, logging.INFO)
            assert after != before
            before = after
    finally:
        logging.disable(logging.NOTSET)
        logging.getLogger().handlers = [
            h for h in logging.getLogger().handlers if not isinstance(h, logging.NullHandler)
        ]


def test_notices_among_confirmations() -> None:
    """A sender applies plans and withdrawals as they come, a notice cut in two only once whole."""
    import socket

    from forksafe_logging import _unconfirmed

    listener_side, sender_side = socket.socketpair()
    ledger = _unconfirmed.Ledger(sender_side)
    try:
        for n in range(1, 4):
            ledger.records.append((n, None, 0, b"", None))  # type: ignore[arg-type]
        ledger.sent = 3
        spec = _reproducible.spec(logging.Formatter("%(message)s"))
        version = list(sys.version_info[:2])
        offer = _wire.notice(["plan", 9, "app", 20, [spec], version, None])
        assert offer is not None
        listener_side.sendall(_wire.CONFIRM.pack(1) + offer[:10])
        assert ledger.take(None)
        assert [r[0] for r in ledger.records] == [2, 3]  # the confirmation before it, applied
        assert ledger.plans == {}  # half a notice: not yet
        listener_side.sendall(offer[10:] + _wire.CONFIRM.pack(3))
        assert ledger.take(None)
        assert not ledger.records
        assert ledger.plans[("app", 20)].number == 9
        other = _wire.notice(["plan", 9, "app", 20, [spec], [2, 7], None])  # another Python
        withdraw = _wire.notice(["withdraw", 9])
        assert other is not None
        assert withdraw is not None
        listener_side.sendall(withdraw + other)
        assert ledger.take(None)
        assert ledger.plans == {}
        assert _wire.notice(["plan", "x" * _wire.MAX_NOTICE]) is None  # never sent
    finally:
        ledger.close()
        listener_side.close()


class _Slotted:
    """A formatter of the program's that has no ``__dict__``."""

    __slots__ = ()

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def test_odd_objects_in_the_configuration(fresh_logger: logging.Logger) -> None:
    """What the listener cannot look into means no plan, never an exception in its thread."""
    _bare_root()
    handler = logging.StreamHandler(io.StringIO())
    handler.formatter = _Slotted()  # type: ignore[assignment]
    fresh_logger.addHandler(handler)
    assert _reproducible.facts(fresh_logger.name, logging.WARNING) is None
    assert _reproducible.spec(handler.formatter) is None  # type: ignore[arg-type]
    fresh_logger.handlers = [object()]  # type: ignore[list-item]
    assert _reproducible.facts(fresh_logger.name, logging.WARNING) is None
    assert _reproducible.targets(fresh_logger.name, logging.WARNING) is None
