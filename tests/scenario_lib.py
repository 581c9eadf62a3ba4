"""Helpers for the scenario scripts that tests run in fresh interpreters.

Each scenario is a small program: it configures logging, maybe calls
``install()``, arranges a race, forks, and prints one JSON line of facts that
the test asserts on. A fresh interpreter per scenario because at-fork hooks
cannot be unregistered, and because several scenarios need a child that exits
normally (running ``logging.shutdown`` and finalizers), which a forked pytest
process must not do.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional, Tuple


def child(
    fn: Callable[[], Any], *, timeout: float = 5.0, exit: str = "os", method: str = "os.fork"
) -> str:
    """Fork; run ``fn`` in the child; report how the child ended.

    Returns ``"ok"``, ``"hung"`` (no exit within ``timeout``: killed) or
    ``"exit N"``. ``exit="normal"`` ends the child with ``sys.exit(0)`` so
    atexit handlers and ``logging.shutdown()`` run, as in a real program;
    ``"os"`` uses ``os._exit(0)`` as ``multiprocessing`` does.
    ``method="multiprocessing"`` starts the child as a ``multiprocessing``
    process with the ``fork`` start method instead of calling ``os.fork()``.
    """
    if method == "multiprocessing":
        return _mp_child(fn, timeout)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        if exit == "normal" and code == 0:
            sys.exit(0)  # the pipe's write end closes when the process ends
        os._exit(code)
    os.close(w)
    # The child holds the write end until it exits: EOF means it has ended.
    # select() gives a deadline; nothing here sleeps to wait for the child.
    ready, _, _ = select.select([r], [], [], timeout)
    os.close(r)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "hung"
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return "ok" if code == 0 else "exit %d" % code


def forked(work: Callable[[], Any]) -> Any:
    """Fork; return what ``work()`` returned in the child (through JSON).

    ``os.fork()`` and ``os._exit()``: the child runs ``work()`` and nothing
    else. Raises ``AssertionError`` if the child did not exit with 0 (an
    exception in ``work()``: its repr is in the message).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            result = work()
        except BaseException as exc:
            result, code = repr(exc), 1
        os.write(w, json.dumps(result).encode())
        os.close(w)
        os._exit(code)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)


def _mp_child(fn: Callable[[], Any], timeout: float) -> str:
    import multiprocessing

    process = multiprocessing.get_context("fork").Process(target=fn)
    process.start()
    process.join(timeout)  # returns when the process ends, or at the deadline
    if process.is_alive():
        process.kill()
        process.join()
        return "hung"
    return "ok" if process.exitcode == 0 else "exit %s" % process.exitcode


class Holder:
    """A thread that takes ``lock`` and keeps it until :meth:`release`."""

    def __init__(self, lock: Any) -> None:
        self._taken = threading.Event()
        self._release = threading.Event()
        self._lock = lock
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self._taken.wait(10):
            raise RuntimeError("holder thread did not take the lock")

    def _run(self) -> None:
        with self._lock:
            self._taken.set()
            self._release.wait(30)

    def release(self) -> None:
        self._release.set()
        self.thread.join(10)


class Behind:
    """A forked child whose record a record of the top must follow.

    The child logs ``"hello"`` on ``logger`` at once, then ``"behind"``
    when told (:meth:`send_behind`), then exits when told (:meth:`finish`).
    """

    def __init__(self, logger: str) -> None:
        go_r, self._go_w = os.pipe()
        self._sent_r, sent_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            kid = logging.getLogger(logger)
            kid.info("hello")
            os.write(sent_w, b"x")
            os.read(go_r, 1)
            kid.info("behind")  # in the kernel when the call returns
            os.write(sent_w, b"x")
            os.read(go_r, 1)
            os._exit(0)

    def hello_sent(self) -> None:
        """Return once the child's ``"hello"`` is sent."""
        os.read(self._sent_r, 1)

    def send_behind(self) -> None:
        """Return once the child's ``"behind"`` is sent (in the kernel, or being dispatched)."""
        os.write(self._go_w, b"x")
        os.read(self._sent_r, 1)

    def finish(self) -> None:
        """Let the child exit, and reap it."""
        os.write(self._go_w, b"x")
        os.waitpid(self.pid, 0)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn`` took."""
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def mapped_here(name: str) -> Tuple[int, int]:
    """This process's mappings, and its descriptors, of files whose name has ``name`` (Linux)."""
    with open("/proc/self/maps") as f:
        maps = sum(name in line for line in f)
    fds = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds += name in os.readlink("/proc/self/fd/" + fd)
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return maps, fds


def report(**facts: Any) -> None:
    """Print the scenario's facts as the last line of stdout."""
    sys.stdout.write(json.dumps(facts) + "\n")
    sys.stdout.flush()


def stamp_writer(record: logging.LogRecord) -> bool:
    """A filter that gives ``record`` the pid of the process writing it, as ``writer``.

    On a handler of the top, ``%(writer)d`` next to ``%(process)d`` tells who
    wrote a line apart from who logged it.
    """
    record.writer = os.getpid()  # type: ignore[attr-defined]
    return True


def writer_file_handler(
    path: str, fmt: str = "%(writer)d|%(process)d|%(message)s", style: str = "%"
) -> logging.Handler:
    """A ``FileHandler`` on ``path`` whose lines carry the writing pid (:func:`stamp_writer`)."""
    handler = logging.FileHandler(path)
    handler.addFilter(stamp_writer)
    handler.setFormatter(logging.Formatter(fmt, style=style))  # type: ignore[arg-type]
    return handler


def install_from_argv() -> Optional[Dict[str, Any]]:
    """``install()`` with the JSON options in ``argv[1]``, unless it is ``null``."""
    options = json.loads(sys.argv[1])
    if options is not None:
        import forksafe_logging

        forksafe_logging.install(**options)
    return options


class Stuck(logging.Handler):
    """A handler whose ``emit()`` blocks until :attr:`gate` is set.

    In the top process it holds the listener thread: senders' socket
    buffers fill and their sends block. :attr:`entered` is set once the
    listener is in it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.gate.wait(60)
