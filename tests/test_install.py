"""install(), uninstall() and is_installed(): the switch itself, and its misuse."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict

import pytest

import forksafe_logging


class TestSwitch:
    def test_install_then_uninstall(self) -> None:
        """is_installed() follows install() and uninstall()."""
        assert not forksafe_logging.is_installed()
        forksafe_logging.install()
        assert forksafe_logging.is_installed()
        forksafe_logging.uninstall()
        assert not forksafe_logging.is_installed()

    def test_idempotent(self) -> None:
        """Calling install() or uninstall() twice is harmless."""
        forksafe_logging.install()
        forksafe_logging.install()
        assert forksafe_logging.is_installed()
        forksafe_logging.uninstall()
        forksafe_logging.uninstall()
        assert not forksafe_logging.is_installed()

    def test_configuration_untouched(self) -> None:
        """install() and uninstall() change no logger, handler or level."""
        root = logging.getLogger()
        handler = logging.NullHandler()
        root.addHandler(handler)
        before = (root.handlers[:], root.level, dict(logging.Logger.manager.loggerDict))
        forksafe_logging.install()
        forksafe_logging.uninstall()
        assert (root.handlers[:], root.level, dict(logging.Logger.manager.loggerDict)) == before

    @pytest.mark.timeout(30)
    def test_inherit_starts_no_thread(self) -> None:
        """install(child='inherit') starts no thread of its own."""
        before = threading.active_count()
        forksafe_logging.install(child="inherit")
        assert threading.active_count() == before

    @pytest.mark.timeout(30)
    def test_forward_starts_the_listener(self) -> None:
        """install() starts one thread, the listener; uninstall() stops it."""
        before = set(threading.enumerate())
        forksafe_logging.install()
        started = set(threading.enumerate()) - before
        assert [t.name for t in started] == ["forksafe_logging listener"]
        forksafe_logging.uninstall()
        assert not any(t.is_alive() for t in started)

    @pytest.mark.timeout(30)
    def test_mode_switch_then_uninstall_stops_listener(self) -> None:
        """install(), install(child='inherit'), uninstall(): no listener is left behind."""
        before = set(threading.enumerate())
        forksafe_logging.install()
        forksafe_logging.install(child="inherit")
        forksafe_logging.uninstall()
        assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
        assert "FORKSAFE_LOGGING_LISTENER" not in os.environ

    @pytest.mark.timeout(30)
    def test_thread_safe(self) -> None:
        """Concurrent install() and uninstall() calls leave a consistent state."""
        barrier = threading.Barrier(8)
        errors = []

        def flip(n: int) -> None:
            try:
                barrier.wait(10)
                for _ in range(200):
                    if n % 2:
                        forksafe_logging.install()
                    else:
                        forksafe_logging.uninstall()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=flip, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not errors
        forksafe_logging.install()
        assert forksafe_logging.is_installed()


class TestMisuse:
    @pytest.mark.parametrize("child", ["fowrard", "", "INHERIT", None, 3])
    def test_unknown_mode(self, child: Any) -> None:
        """An unknown child mode fails at install(), naming the valid ones."""
        expected = "child must be one of 'forward', 'inherit', 'reset'; got"
        with pytest.raises(ValueError, match=expected):
            forksafe_logging.install(child=child)
        assert not forksafe_logging.is_installed()

    @pytest.mark.parametrize("config", [42, "logging.conf", ["handlers"]])
    def test_config_type(self, config: Any) -> None:
        """A config that is neither a mapping nor a callable is a TypeError at install()."""
        with pytest.raises(TypeError, match=r"config must be a logging\.config\.dictConfig"):
            forksafe_logging.install(child="reset", config=config)

    def test_config_needs_reset(self) -> None:
        """config= with a mode that would ignore it is refused, not silently dropped."""
        config: Dict[str, Any] = {"version": 1}
        with pytest.raises(ValueError, match="config= is applied only in child='reset' mode"):
            forksafe_logging.install(config=config)

    @pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf")])
    def test_fork_timeout_value(self, timeout: float) -> None:
        """fork_timeout must be a finite, non-negative number of seconds."""
        with pytest.raises(ValueError, match="fork_timeout must be a finite number"):
            forksafe_logging.install(fork_timeout=timeout)

    @pytest.mark.parametrize("timeout", ["1", True, None])
    def test_fork_timeout_type(self, timeout: Any) -> None:
        """fork_timeout must be a number."""
        with pytest.raises(TypeError, match="fork_timeout must be a number of seconds"):
            forksafe_logging.install(fork_timeout=timeout)

    def test_misuse_keeps_previous_settings(self) -> None:
        """A refused install() leaves the previous installation in force."""
        forksafe_logging.install()
        with pytest.raises(ValueError, match="child must be one of"):
            forksafe_logging.install(child="nope")
        assert forksafe_logging.is_installed()


UNINSTALL_IN_CHILD = """
    import logging, logging.handlers, os, sys
    from scenario_lib import report
    import forksafe_logging

    first_use = sys.argv[2]
    target = logging.FileHandler("out.log")
    target.setFormatter(logging.Formatter("%(process)d %(message)s"))
    logging.getLogger().addHandler(
        logging.handlers.MemoryHandler(100, flushLevel=logging.CRITICAL, target=target)
    )
    logging.getLogger().setLevel(logging.INFO)
    if first_use != "without":
        forksafe_logging.install()
    pid = os.fork()
    if pid == 0:
        if first_use == "logged":
            logging.info("before uninstall")  # forwarded: the child is rewired
        forksafe_logging.uninstall()
        for n in range(3):
            logging.info("child %d", n)  # buffered in the child's MemoryHandler
        sys.exit(0)  # a normal exit: logging.shutdown() flushes what it knows
    _, status = os.waitpid(pid, 0)
    forksafe_logging.flush()
    report(child=pid, status=status)
"""


class TestUninstallExact:
    """uninstall() leaves logging as it would be without the library, in the parent and a child."""

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("first_use", ["not-logged", "logged", "without"])
    def test_child_flushes_inherited_handlers_at_exit(self, scenario: Any, first_use: str) -> None:
        """A forked child that switches off flushes its inherited MemoryHandler at exit.

        ``without``: the control, no library at all.
        """
        facts = scenario.run(UNINSTALL_IN_CHILD, args=[first_use]).facts
        assert facts["status"] == 0
        lines = (scenario.tmp_path / "out.log").read_text().splitlines()
        child = ["%d child %d" % (facts["child"], n) for n in range(3)]
        assert [line for line in lines if " child " in line] == child
        before = [line for line in lines if "before uninstall" in line]
        assert len(before) == (1 if first_use == "logged" else 0)

    @pytest.mark.timeout(60)
    def test_fork_warning_filter_gone(self, scenario: Any) -> None:
        """After install(), a fork with the listener running, and uninstall(), the
        warning filters are the user's own again (on 3.13 ours stayed until the next fork,
        which never removed it once switched off: the user's thread warnings were silenced)."""
        body = """
            import logging, os, warnings
            from scenario_lib import report
            import forksafe_logging

            before = list(warnings.filters)
            logging.basicConfig(level=logging.INFO)
            forksafe_logging.install()
            pid = os.fork()
            if pid == 0:
                logging.info("child")  # the listener thread runs in the parent now
                os._exit(0)
            os.waitpid(pid, 0)
            forksafe_logging.flush()
            forksafe_logging.uninstall()
            report(same=list(warnings.filters) == before,
                   extra=[repr(f) for f in warnings.filters if f not in before])
        """
        facts = scenario.run(body).facts
        assert facts["same"], facts["extra"]
