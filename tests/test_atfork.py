"""Each way fork() breaks logging, and each hazard of the fix, as its own scenario.

Every scenario runs in a fresh interpreter under a timeout. The tests that
show a failure of plain logging run once without ``install()`` as a control:
the control must fail the way the issue describes, which proves the scenario
can fail, and once with it, where it must not.
"""

from __future__ import annotations

import pytest
from conftest import WITH, WITHOUT, Scenario

pytestmark = pytest.mark.timeout(120)

BOTH = pytest.mark.parametrize("install", [WITH, WITHOUT], ids=["installed", "plain"])
#: Start the child with os.fork() directly, or through multiprocessing's fork context.
METHODS = pytest.mark.parametrize("method", ["os.fork", "multiprocessing"])


class TestQueueLockHeldAtFork:
    BODY = """
        import logging, logging.handlers, queue, sys
        from scenario_lib import child, Holder, report, install_from_argv
        install_from_argv()
        q = queue.Queue()
        logging.getLogger().addHandler(logging.handlers.QueueHandler(q))
        # A thread frozen inside put(): it holds the queue's mutex at the fork.
        holder = Holder(q.mutex)

        def in_child():
            logging.getLogger().warning("from the child")
            assert q.get_nowait().getMessage() == "from the child"

        outcome = child(in_child, timeout=3, method=sys.argv[2])
        holder.release()
        report(child=outcome)
    """

    @BOTH
    @METHODS
    def test_child_logs(self, scenario: Scenario, install: object, method: str) -> None:
        """A child forked while another thread holds the QueueHandler's queue mutex can log."""
        facts = scenario.run(self.BODY, install, args=[method]).facts
        assert facts["child"] == ("ok" if install else "hung")


class TestManyQueues:
    """Several QueueHandlers, each with its queue: every one is found and repaired.

    The walk once marked each queue it met as seen by the id of a short-lived
    wrapper, which the next wrapper could reuse: a queue met after it was then
    skipped, and its mutex, held at the fork, stayed held in the child.
    """

    BODY = """
        import logging, logging.handlers, queue, sys
        from scenario_lib import child, Holder, report, install_from_argv
        install_from_argv()
        names = ["q%d" % n for n in range(6)]
        queues = {}
        for name in names:
            queues[name] = queue.Queue()
            logger = logging.getLogger(name)
            logger.propagate = False
            logger.addHandler(logging.handlers.QueueHandler(queues[name]))
        # A thread frozen inside put() of each: each mutex is held at the fork.
        holders = [Holder(q.mutex) for q in queues.values()]

        def in_child():
            for name in names:
                logging.getLogger(name).warning("from the child")
                assert queues[name].get_nowait().getMessage() == "from the child"

        outcome = child(in_child, timeout=3, method="os.fork")
        for holder in holders:
            holder.release()
        report(child=outcome)
    """

    @BOTH
    def test_child_logs_through_each(self, scenario: Scenario, install: object) -> None:
        """A child forked while every queue's mutex is held logs through every queue."""
        facts = scenario.run(self.BODY, install).facts
        assert facts["child"] == ("ok" if install else "hung")


class TestListenerRestarted:
    BODY = """
        import collections, logging, logging.handlers, os, queue, sys, threading
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        parent = os.getpid()
        entered, gate = threading.Event(), threading.Event()

        class Gated(logging.FileHandler):
            # In the parent, the first record blocks here until the child is done,
            # so the parent's other records are still pending in the queue at the fork.
            def emit(self, record):
                if os.getpid() == parent:
                    entered.set()
                    gate.wait(30)
                super().emit(record)

        q = queue.Queue()
        listener = logging.handlers.QueueListener(q, Gated("out.log"))
        listener.start()
        root = logging.getLogger()
        root.addHandler(logging.handlers.QueueHandler(q))
        root.setLevel(logging.INFO)
        for i in range(5):
            logging.info("parent %d", i)
        entered.wait(10)

        def in_child():
            logging.info("child")
            listener.stop()  # handles what the child queued, then ends the thread

        outcome = child(in_child, timeout=5, method=sys.argv[2])
        gate.set()
        listener.stop()
        with open("out.log") as f:
            counts = collections.Counter(f.read().splitlines())
        report(child=outcome, counts=counts)
    """

    @BOTH
    @METHODS
    def test_each_record_once(self, scenario: Scenario, install: object, method: str) -> None:
        """The child's listener restarts: its record is handled, the parent's pending ones once."""
        facts = scenario.run(self.BODY, install, args=[method]).facts
        assert facts["child"] == "ok"
        expected = {"parent %d" % i: 1 for i in range(5)}
        if install:
            expected["child"] = 1
        # Plain logging: the child's record is lost (no listener thread in the child).
        assert facts["counts"] == expected


class TestBufferedLine:
    BODY = """
        import collections, logging
        from scenario_lib import child, report, install_from_argv
        install_from_argv()

        class Batching(logging.StreamHandler):
            # Leaves records in the file object's buffer: writes happen in batches.
            def flush(self):
                pass

        stream = open("out.log", "a")
        logging.getLogger().addHandler(Batching(stream))
        logging.warning("before the fork")
        outcome = child(lambda: logging.warning("child"), exit="normal")
        stream.close()
        with open("out.log") as f:
            counts = collections.Counter(f.read().splitlines())
        report(child=outcome, counts=counts)
    """

    @BOTH
    def test_not_written_twice(self, scenario: Scenario, install: object) -> None:
        """What the parent buffered before the fork is written once, not again by the child."""
        facts = scenario.run(self.BODY, install).facts
        assert facts["child"] == "ok"
        assert facts["counts"]["child"] == 1
        assert facts["counts"]["before the fork"] == (1 if install else 2)


class TestHandlerOwnLocks:
    BODY = """
        import logging, os, sys, threading
        from scenario_lib import child, Holder, report, install_from_argv
        install_from_argv()

        class OwnLock(logging.StreamHandler):
            # Overrides createLock: the stdlib does not know to re-initialize it.
            def createLock(self):
                self.lock = threading.RLock()

        class ExtraLock(logging.Handler):
            def __init__(self):
                super().__init__()
                self.io_lock = threading.Lock()
                self.lines = []

            def emit(self, record):
                with self.io_lock:
                    self.lines.append(record.getMessage())

        handler = OwnLock(open(os.devnull, "w")) if sys.argv[2] == "createLock" else ExtraLock()
        logging.getLogger().addHandler(handler)
        holder = Holder(handler.lock if sys.argv[2] == "createLock" else handler.io_lock)
        outcome = child(lambda: logging.warning("from the child"), timeout=3)
        holder.release()
        report(child=outcome)
    """

    @BOTH
    @pytest.mark.parametrize("kind", ["createLock", "extra lock"])
    def test_child_logs(self, scenario: Scenario, install: object, kind: str) -> None:
        """Locks a handler makes itself (createLock override, attributes) are usable in a child."""
        facts = scenario.run(self.BODY, install, args=[kind]).facts
        assert facts["child"] == ("ok" if install else "hung")


class TestBlockedStreamWrite:
    BODY = """
        import fcntl, logging, os, termios, threading, array
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        r, w = os.pipe()
        stream = os.fdopen(w, "w")
        logging.getLogger().addHandler(logging.StreamHandler(stream))
        big = "x" * (1 << 20)
        writer = threading.Thread(target=lambda: logging.warning("big %s", big))
        writer.start()

        def pipe_bytes():
            buf = array.array("i", [0])
            fcntl.ioctl(r, termios.FIONREAD, buf)
            return buf[0]

        # Wait (bounded) until the pipe is full: the writer is then blocked inside
        # write(), holding the handler lock and the file object's internal lock.
        capacity = fcntl.fcntl(r, 1032)  # F_GETPIPE_SZ
        for _ in range(1000):
            if pipe_bytes() >= capacity:
                break
            writer.join(0.01)
        chunks = []
        start_reading = threading.Event()
        os.register_at_fork(after_in_parent=start_reading.set)

        def drain():
            start_reading.wait(30)
            while True:
                data = os.read(r, 1 << 16)
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=drain)
        reader.start()
        outcome = child(lambda: logging.warning("child line"), timeout=5)
        writer.join(30)
        stream.close()
        reader.join(30)
        # Two writers share one pipe: the child's short line may land inside
        # the parent's big one, which the kernel writes in pieces. Count both.
        data = b"".join(chunks).decode()
        report(child=outcome, child_lines=data.count("child line"), big_lines=data.count("big "))
    """

    @BOTH
    def test_child_writes(self, scenario: Scenario, install: object) -> None:
        """A child forked while a thread is blocked inside the stream's write() can write."""
        facts = scenario.run(self.BODY, install).facts
        if install:
            assert facts == {"child": "ok", "child_lines": 1, "big_lines": 1}
        else:
            assert facts["child"] == "hung"
            assert facts["big_lines"] == 1


class TestMemoryHandler:
    BODY = """
        import collections, logging, logging.handlers
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        target = logging.FileHandler("out.log")
        memory = logging.handlers.MemoryHandler(100, logging.CRITICAL, target)
        logging.getLogger().addHandler(memory)
        for i in range(3):
            logging.warning("parent %d", i)
        # The child exits normally: logging.shutdown() flushes its MemoryHandler.
        outcome = child(lambda: logging.warning("child"), exit="normal")
        memory.close()
        target.close()
        with open("out.log") as f:
            counts = collections.Counter(f.read().splitlines())
        report(child=outcome, counts=counts)
    """

    @BOTH
    def test_buffer_flushed_once(self, scenario: Scenario, install: object) -> None:
        """A MemoryHandler's buffered records are flushed by the parent only."""
        facts = scenario.run(self.BODY, install).facts
        assert facts["child"] == "ok"
        copies = 1 if install else 2
        assert facts["counts"] == {"child": 1, **{"parent %d" % i: copies for i in range(3)}}


class TestMultiprocessingQueue:
    BODY = """
        import logging, logging.handlers, multiprocessing, queue
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        mpq = multiprocessing.Queue()
        logging.getLogger().addHandler(logging.handlers.QueueHandler(mpq))
        logging.warning("parent")  # starts the queue's feeder thread
        got = [mpq.get(timeout=10).getMessage()]

        def in_child():
            logging.warning("child")
            mpq.close()
            mpq.join_thread()  # returns once the feeder has sent everything

        outcome = child(in_child, timeout=5)
        try:
            got.append(mpq.get(timeout=5).getMessage())
        except queue.Empty:
            pass
        report(child=outcome, got=got)
    """

    @BOTH
    def test_after_plain_fork(self, scenario: Scenario, install: object) -> None:
        """After a plain os.fork(), records put on an inherited multiprocessing.Queue arrive."""
        facts = scenario.run(self.BODY, install).facts
        assert facts["child"] == "ok"
        assert facts["got"] == (["parent", "child"] if install else ["parent"])


class TestSockets:
    BODY = """
        import logging, logging.handlers, pickle, socket, struct, threading
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        received, readers = [], []  # (connection number, message)

        def read_records(conn, n):
            with conn, conn.makefile("rb") as f:
                while True:
                    head = f.read(4)
                    if len(head) < 4:
                        return
                    body = f.read(struct.unpack(">L", head)[0])
                    received.append((n, pickle.loads(body)["msg"]))

        def accept():
            while True:
                conn, _ = server.accept()
                if conn.recv(1, socket.MSG_PEEK) == b"":  # the stop signal below
                    conn.close()
                    return
                readers.append(threading.Thread(target=read_records, args=(conn, len(readers))))
                readers[-1].start()

        acceptor = threading.Thread(target=accept)
        acceptor.start()
        handler = logging.handlers.SocketHandler(*server.getsockname())
        logging.getLogger().addHandler(handler)
        logging.warning("parent 1")

        def in_child():
            logging.warning("child")
            handler.close()

        outcome = child(in_child)
        logging.warning("parent 2")
        handler.close()
        socket.create_connection(server.getsockname()).close()
        acceptor.join(10)
        for t in readers:
            t.join(10)
        report(child=outcome, received=sorted(received))
    """

    @BOTH
    def test_child_own_connection(self, scenario: Scenario, install: object) -> None:
        """A child's SocketHandler connects anew; the parent's connection stays up."""
        facts = scenario.run(self.BODY, install).facts
        assert facts["child"] == "ok"
        if install:
            assert facts["received"] == [[0, "parent 1"], [0, "parent 2"], [1, "child"]]
        else:  # the child wrote into the parent's stream
            assert facts["received"] == [[0, "child"], [0, "parent 1"], [0, "parent 2"]]


class TestForkReturns:
    BODY = """
        import logging, threading, time
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        entered, never = threading.Event(), threading.Event()

        class Stuck(logging.Handler):
            def emit(self, record):
                entered.set()
                never.wait(60)

        logging.getLogger().addHandler(Stuck())
        threading.Thread(target=logging.warning, args=("stuck",), daemon=True).start()
        entered.wait(10)
        started = time.monotonic()
        outcome = child(lambda: None, timeout=30)
        seconds = time.monotonic() - started
        never.set()  # or logging.shutdown() would wait for the stuck handler at exit
        report(child=outcome, seconds=seconds)
    """

    def test_bounded_while_handler_stuck(self, scenario: Scenario) -> None:
        """A fork returns, in about fork_timeout, while a handler's emit() never returns."""
        facts = scenario.run(self.BODY, {"fork_timeout": 0.2}).facts
        assert facts["child"] == "ok"
        # Correctness, not speed: without a deadline the fork would never return.
        assert facts["seconds"] < 10


class TestChildHookAlone:
    BODY = """
        import ctypes, logging, logging.handlers, os, queue, sys, threading
        from scenario_lib import Holder, report, install_from_argv
        install_from_argv()

        class OwnLock(logging.StreamHandler):
            def createLock(self):
                self.lock = threading.RLock()

        q = queue.Queue()
        own = OwnLock(open(os.devnull, "w"))
        root = logging.getLogger()
        root.addHandler(logging.handlers.QueueHandler(q))
        root.addHandler(own)
        holders = [Holder(q.mutex), Holder(own.lock)]
        # As uWSGI does: fork() from C, then only PyOS_AfterFork_Child(), so no
        # before/after_in_parent hook runs. PyDLL keeps the GIL across the call.
        # The import lock is held across fork() as PyOS_BeforeFork() would
        # (3.13's PyOS_AfterFork_Child() releases it and aborts if unheld);
        # taking it runs no at-fork hook.
        import _imp
        libc = ctypes.PyDLL(None)
        r, w = os.pipe()
        _imp.acquire_lock()
        pid = libc.fork()
        if pid != 0:
            _imp.release_lock()
        if pid == 0:
            ctypes.pythonapi.PyOS_AfterFork_Child()
            try:
                logging.warning("child")
                assert q.get_nowait().getMessage() == "child"
                os.write(w, b"ok")
            finally:
                os._exit(0)
        os.close(w)
        import select
        ready, _, _ = select.select([r], [], [], 5)
        result = os.read(r, 10).decode() if ready else "hung"
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        for h in holders:
            h.release()
        report(child=result)
    """

    @BOTH
    def test_child_hook_alone(self, scenario: Scenario, install: object) -> None:
        """With only the child hook run (uWSGI), locks held by the parent's threads are usable."""
        facts = scenario.run(self.BODY, install).facts
        assert facts["child"] == ("ok" if install else "hung")


class TestDeprecationWarning:
    BODY = """
        import logging, logging.handlers, os, queue, warnings
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        q = queue.Queue()
        logging.getLogger().addHandler(logging.handlers.QueueHandler(q))

        def recorded(fn):
            # Recorded, not raised: os.fork() reports an "error" as unraisable.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                outcome = fn()
            return outcome, [str(w.message) for w in caught]

        def in_child():
            logging.warning("child")
            outcome, caught = recorded(lambda: child(lambda: logging.warning("grandchild")))
            assert outcome == "ok" and caught == [], (outcome, caught)

        outcome, caught = recorded(lambda: child(in_child))
        report(child=outcome, warnings=caught)
    """

    def test_no_new_warning(self, scenario: Scenario) -> None:
        """install() adds no 'multi-threaded fork' DeprecationWarning, in child or parent."""
        facts = scenario.run(self.BODY, WITH).facts
        assert facts == {"child": "ok", "warnings": []}


def _after_install(body: str, *statements: str) -> str:
    """``body`` with ``statements`` run right after its install_from_argv() call."""
    extra = "".join("\n        " + line for line in statements)
    return body.replace("install_from_argv()", "install_from_argv()" + extra)


class TestUninstall:
    def test_hooks_inert(self, scenario: Scenario) -> None:
        """After uninstall() the hooks do nothing: the queue-lock case hangs again, as plain."""
        body = _after_install(
            TestQueueLockHeldAtFork.BODY, "import forksafe_logging", "forksafe_logging.uninstall()"
        )
        assert scenario.run(body, WITH, args=["os.fork"]).facts["child"] == "hung"

    def test_reinstall(self, scenario: Scenario) -> None:
        """install(), uninstall(), install() twice: covered again."""
        body = _after_install(
            TestQueueLockHeldAtFork.BODY,
            "import forksafe_logging",
            "forksafe_logging.uninstall()",
            "forksafe_logging.install(child='inherit')",
            "forksafe_logging.install(child='inherit')",
        )
        assert scenario.run(body, WITH, args=["os.fork"]).facts["child"] == "ok"

    INSTALL_IN_CHILD = """
        import logging, logging.handlers, queue
        from scenario_lib import child, Holder, report, install_from_argv
        q = queue.Queue()
        logging.getLogger().addHandler(logging.handlers.QueueHandler(q))

        def in_child():
            import forksafe_logging

            forksafe_logging.install()
            inner = Holder(q.mutex)
            outcome = child(lambda: logging.warning("grandchild"), timeout=3)
            inner.release()
            assert outcome == "ok", outcome

        report(child=child(in_child, timeout=10))
    """

    def test_install_in_child(self, scenario: Scenario) -> None:
        """install() called first in a child covers that child's own children."""
        assert scenario.run(self.INSTALL_IN_CHILD, WITHOUT).facts["child"] == "ok"


class TestGrandchildren:
    BODY = """
        import logging, logging.handlers, queue
        from scenario_lib import child, Holder, report, install_from_argv
        install_from_argv()
        q = queue.Queue()
        logging.getLogger().addHandler(logging.handlers.QueueHandler(q))
        holder = Holder(q.mutex)
        results = {}

        def in_child():
            logging.warning("child")
            # The child has threads of its own, holding the same mutex at its fork.
            inner = Holder(q.mutex)
            outcome = child(lambda: logging.warning("grandchild"), timeout=3)
            inner.release()
            assert outcome == "ok", outcome

        results["child"] = child(in_child, timeout=10)
        holder.release()
        report(**results)
    """

    def test_grandchild_logs(self, scenario: Scenario) -> None:
        """Grandchildren are covered: the hooks work again in a forked child."""
        assert scenario.run(self.BODY, WITH).facts["child"] == "ok"


@pytest.mark.timeout(30)
def test_before_hook_takes_the_module_lock_logging_has_now() -> None:
    """billiard gives logging a new module lock in each process; the hook must use that one."""
    import logging
    import threading

    from scenario_lib import Holder

    import forksafe_logging
    from forksafe_logging import _atfork
    from forksafe_logging._state import state

    original = logging._lock  # type: ignore[attr-defined]
    replacement = threading.RLock()
    logging._lock = replacement  # type: ignore[attr-defined]
    try:
        forksafe_logging.install(child="inherit", fork_timeout=0.05)
        holder = Holder(replacement)  # another thread inside logging's critical section
        try:
            _atfork.before_fork()
            plan = state.plans[threading.get_ident()]
            # Busy module lock: the hook must take nothing and leave it to the child.
            taken_while_held = (plan.complete, list(plan.acquired))
            _atfork.after_fork_in_parent()
        finally:
            holder.release()
    finally:
        logging._lock = original  # type: ignore[attr-defined]
    assert taken_while_held == (False, [])
