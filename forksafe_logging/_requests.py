"""Work another thread asks the listener's thread to do: a list, and a pipe that wakes it."""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Callable, List, Optional


class Requests:
    """Calls to run on one thread, between its rounds.

    ``wake_r`` is in that thread's selector: a byte written to ``wake_w``
    ends its wait, and it calls :meth:`serve`.
    """

    __slots__ = ("_pending", "thread", "wake_r", "wake_w")

    def __init__(self, wake_r: int, wake_w: int) -> None:
        self.wake_r = wake_r
        self.wake_w = wake_w
        os.set_blocking(wake_r, False)
        self._pending: List[Callable[[], None]] = []
        #: The thread that serves them (set once it exists).
        self.thread: Optional[threading.Thread] = None

    def call(self, request: Callable[[], None], timeout: Optional[float]) -> bool:
        """Run ``request`` on the thread; whether it ran within ``timeout``."""
        if threading.current_thread() is self.thread:
            request()
            return True
        done = threading.Event()

        def run() -> None:
            try:
                request()
            finally:
                done.set()

        self._pending.append(run)
        try:
            os.write(self.wake_w, b"\0")
        except OSError:
            return False
        return done.wait(timeout)

    def serve(self) -> None:
        """On the thread: run what is asked of it."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        pending, self._pending = self._pending, []
        for request in pending:
            request()

    def forget(self) -> None:
        """Drop what is pending (the thread has stopped, the pipe is closed)."""
        self._pending = []
