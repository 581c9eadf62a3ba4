"""The child modes: what a forked child does with the configuration it inherited."""

from __future__ import annotations

import sys
from typing import Any, Dict

import pytest
from conftest import Scenario

pytestmark = pytest.mark.timeout(120)

DICT_CONFIG: Dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(message)s"}},
    "handlers": {
        "child_file": {
            "class": "logging.FileHandler",
            "filename": "child.log",
            "formatter": "plain",
        }
    },
    "root": {"handlers": ["child_file"], "level": "INFO"},
}

RESET = """
    import logging, logging.handlers, queue, sys
    from scenario_lib import child, Holder, report, install_from_argv

    def configure_child():
        handler = logging.FileHandler("child.log")
        logging.getLogger().addHandler(handler)

    if sys.argv[2] == "callable":
        import forksafe_logging
        forksafe_logging.install(child="reset", config=configure_child)
    else:
        install_from_argv()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(logging.FileHandler("parent.log"))
    q = queue.Queue()
    root.addHandler(logging.handlers.QueueHandler(q))
    holder = Holder(q.mutex)  # the dropped handler's queue is held at the fork
    seen = {}

    def in_child():
        with open("handlers.txt", "w") as f:
            f.write(repr([type(h).__name__ for h in logging.getLogger().handlers]))
        logging.info("child")

    outcome = child(in_child, exit="normal")
    holder.release()
    logging.info("parent after the child exited")
    for handler in root.handlers:
        handler.flush()

    def lines(name):
        try:
            with open(name) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return None

    with open("handlers.txt") as f:
        child_handlers = f.read()
    report(child=outcome, parent=lines("parent.log"), child_log=lines("child.log"),
           child_handlers=child_handlers)
"""


class TestReset:
    def test_dict_config(self, scenario: Scenario) -> None:
        """The child drops the parent's handlers, closing none, and applies the dict."""
        facts = scenario.run(RESET, {"child": "reset", "config": DICT_CONFIG}, args=["dict"]).facts
        assert facts["child"] == "ok"
        assert facts["child_handlers"] == "['FileHandler']"
        assert facts["child_log"] == ["child"]
        # The child's exit closed its copies; the parent's file still works.
        assert facts["parent"] == ["parent after the child exited"]

    def test_callable_config(self, scenario: Scenario) -> None:
        """A callable config runs in the child instead of a dict."""
        facts = scenario.run(RESET, None, args=["callable"]).facts
        assert facts["child"] == "ok"
        assert facts["child_log"] == ["child"]
        assert facts["parent"] == ["parent after the child exited"]

    def test_no_config(self, scenario: Scenario) -> None:
        """Without a config the child has no handlers at all."""
        facts = scenario.run(RESET, {"child": "reset"}, args=["none"]).facts
        assert facts["child"] == "ok"
        assert facts["child_handlers"] == "[]"
        assert facts["child_log"] is None
        assert facts["parent"] == ["parent after the child exited"]

    def test_broken_config_reported(self, scenario: Scenario) -> None:
        """A config that fails in the child is reported on stderr; the child carries on."""
        broken = {"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}
        outcome = scenario.run(RESET, {"child": "reset", "config": broken}, args=["dict"])
        assert outcome.facts["child"] == "ok"
        assert "forksafe_logging: applying the child's logging configuration failed" in (
            outcome.stderr
        )

    def test_config_reapplied_in_grandchild(self, scenario: Scenario) -> None:
        """The dict is applied afresh in every generation (dictConfig mutates what it is given)."""
        body = """
            import logging
            from scenario_lib import child, report, install_from_argv
            install_from_argv()
            logging.getLogger().addHandler(logging.FileHandler("parent.log"))

            def in_child():
                assert child(lambda: logging.warning("grandchild")) == "ok"
                logging.warning("child")

            outcome = child(in_child)
            with open("child.log") as f:
                report(child=outcome, lines=f.read().splitlines())
        """
        facts = scenario.run(body, {"child": "reset", "config": DICT_CONFIG}).facts
        assert facts == {"child": "ok", "lines": ["grandchild", "child"]}


class TestInherit:
    BODY = """
        import logging
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        logging.getLogger().addHandler(logging.FileHandler("out.log"))
        outcome = child(lambda: logging.warning("child"), exit="normal")
        logging.warning("parent")
        with open("out.log") as f:
            report(child=outcome, lines=f.read().splitlines())
    """

    def test_keeps_handlers(self, scenario: Scenario) -> None:
        """In inherit mode the child writes through the handlers it inherited."""
        facts = scenario.run(self.BODY, {"child": "inherit"}).facts
        assert facts == {"child": "ok", "lines": ["child", "parent"]}


class TestInheritedListenerStartedByChild:
    BODY = """
        import logging, logging.handlers, multiprocessing, queue, sys
        from scenario_lib import child, report, install_from_argv
        install_from_argv()
        kind = sys.argv[2]
        q = queue.Queue() if kind == "thread" else multiprocessing.get_context("fork").Queue()
        listener = logging.handlers.QueueListener(q, logging.FileHandler("out.log"))
        listener.start()
        root = logging.getLogger()
        root.addHandler(logging.handlers.QueueHandler(q))

        def in_child():
            if kind == "thread":
                # The child's own listener for the queue it inherited.
                listener.start()
                # Not through the root logger: "reset" dropped its handlers.
                logging.handlers.QueueHandler(q).handle(logging.makeLogRecord({"msg": "child"}))
            listener.stop()

        outcome = child(in_child, exit="normal")
        logging.warning("parent")
        listener.stop()
        with open("out.log") as f:
            report(child=outcome, lines=sorted(f.read().splitlines()))
    """

    @pytest.mark.parametrize("mode", ["inherit", "reset"])
    def test_child_starts_and_stops_it(self, scenario: Scenario, mode: str) -> None:
        """A child may start an inherited QueueListener itself (3.14's start() refused it)."""
        facts = scenario.run(self.BODY, {"child": mode}, args=["thread"]).facts
        assert facts == {"child": "ok", "lines": ["child", "parent"]}

    @pytest.mark.skipif(
        sys.version_info < (3, 14),
        reason="before 3.14 a child's stop() puts the sentinel the parent's thread reads, "
        "with or without the library",
    )
    def test_child_stop_leaves_the_parents_alone(self, scenario: Scenario) -> None:
        """A child's stop() of an inherited listener does not stop the parent's thread."""
        facts = scenario.run(self.BODY, {"child": "inherit"}, args=["process"]).facts
        assert facts == {"child": "ok", "lines": ["parent"]}


class TestInheritPool:
    BODY = """
        import collections, logging, logging.handlers, multiprocessing, queue
        from scenario_lib import report, install_from_argv
        install_from_argv()
        q = queue.Queue()
        listener = logging.handlers.QueueListener(q, logging.FileHandler("out.log"))
        listener.start()
        root = logging.getLogger()
        root.addHandler(logging.handlers.QueueHandler(q))
        root.setLevel(logging.INFO)

        def task(n):
            logging.info("task %d", n)
            return n

        # close() and join(), not the with-block: its exit calls terminate(),
        # which kills the workers that are still draining (see the docs).
        pool = multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1)
        pool.map(task, range(16))
        pool.close()
        pool.join()
        listener.stop()
        with open("out.log") as f:
            report(counts=collections.Counter(f.read().splitlines()))
    """

    def test_restarted_listener_drains_at_worker_exit(self, scenario: Scenario) -> None:
        """A listener restarted in a pool worker handles the worker's records before it exits."""
        facts = scenario.run(self.BODY, {"child": "inherit"}).facts
        assert facts["counts"] == {"task %d" % n: 1 for n in range(16)}


class TestForwardChildExit:
    BODY = """
        import collections, logging
        import forksafe_logging
        from scenario_lib import child, report

        class Batching(logging.StreamHandler):
            # Leaves records in the file object's buffer: writes happen in batches.
            def flush(self):
                pass

        stream = open("out.log", "a")
        logging.getLogger().addHandler(Batching(stream))
        forksafe_logging.install()
        logging.warning("before the fork")

        def in_child():
            logging.warning("child")  # forwarded to the top's handlers
            # A handler the child makes for itself is flushed at its exit.
            own = logging.StreamHandler(open("child.log", "a"))
            own.setFormatter(logging.Formatter("%(message)s"))
            own.handle(logging.makeLogRecord({"msg": "own handler"}))

        outcome = child(in_child, exit="normal")
        forksafe_logging.flush(10)
        stream.flush()
        with open("out.log") as f, open("child.log") as g:
            report(child=outcome, counts=collections.Counter(f.read().splitlines()),
                   own=g.read().splitlines())
    """

    def test_inherited_buffers_never_written_by_the_child(self, scenario: Scenario) -> None:
        """Forwarding: the parent's buffered bytes are written once; the child's own flush."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["child"] == "ok"
        assert facts["counts"] == {"before the fork": 1, "child": 1}
        assert facts["own"] == ["own handler"]


TASKS = ["task 0", "task 1", "task 2", "task 3"]


class TestForkserverChildren:
    """What ``"inherit"`` and ``"reset"`` do for forkserver children depends on
    where ``install()`` is called, as the docs say: the server imports the
    main module, and forks the children from there."""

    BODY = """
        import logging, multiprocessing, os, sys
        import forksafe_logging
        from scenario_lib import report

        def configure_child():
            handler = logging.FileHandler("child.log")
            handler.setFormatter(logging.Formatter("%(message)s"))
            logging.getLogger().addHandler(handler)

        def set_up():
            logging.basicConfig(filename="top.log", level=logging.INFO, format="%(message)s")
            if sys.argv[2] == "reset":
                forksafe_logging.install(child="reset", config=configure_child)
            else:
                forksafe_logging.install(child="inherit")

        def work(i):
            logging.getLogger("w").info("task %d", i)
            return os.getppid()

        if sys.argv[3] == "import":
            set_up()

        def read(name):
            try:
                with open(name) as f:
                    return sorted(f.read().splitlines())
            except FileNotFoundError:
                return []

        if __name__ == "__main__":
            if sys.argv[3] == "main":
                set_up()
            ctx = multiprocessing.get_context("forkserver")
            with ctx.Pool(2) as pool:
                parents = set(pool.map(work, range(4)))
            report(top=read("top.log"), child=read("child.log"),
                   forked_from_server=os.getpid() not in parents)
    """

    @pytest.mark.parametrize("mode", ["inherit", "reset"])
    def test_set_up_at_import(self, scenario: Scenario, mode: str) -> None:
        facts = scenario.run(self.BODY, None, args=[mode, "import"]).facts
        assert facts["forked_from_server"] is True
        if mode == "inherit" or sys.version_info < (3, 14):
            # Inherited from the server, or (up to 3.13) set up by each
            # worker importing the main module itself: the same file.
            assert (facts["top"], facts["child"]) == (TASKS, [])
        else:
            assert (facts["top"], facts["child"]) == ([], TASKS)

    @pytest.mark.parametrize("mode", ["inherit", "reset"])
    def test_set_up_in_main(self, scenario: Scenario, mode: str) -> None:
        facts = scenario.run(self.BODY, None, args=[mode, "main"]).facts
        assert facts["forked_from_server"] is True
        assert (facts["top"], facts["child"]) == ([], [])
