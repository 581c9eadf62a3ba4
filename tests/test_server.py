"""The listener in the top: whom it lets in, how it stops, what it keeps, the context it runs in."""

from __future__ import annotations

import sys

import pytest
from conftest import PRELUDE, START_METHODS, Scenario

pytestmark = pytest.mark.timeout(180)


class TestChannelSecurity:
    BODY = (
        PRELUDE
        + """
import pickle, socket, stat, struct

def attempt(payload_after_auth=None, key=None):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(listener.address)
    from forksafe_logging import _endpoint, _server
    nonce = os.urandom(32)
    sock.sendall(nonce + _endpoint.answer(key or secret, nonce))  # the hello
    if key is None:
        # The listener proves to a sender that knows the key that it does too.
        proof = b""
        while len(proof) < 32:
            proof += sock.recv(32 - len(proof))
        assert proof == _endpoint.listener_answer(secret, nonce)
    if payload_after_auth is not None:
        sock.sendall(payload_after_auth)
    # The listener closes a connection it drops: recv returns b"".
    sock.settimeout(10)
    closed = sock.recv(1) == b""
    sock.close()
    return closed

class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))

def child_logs():
    logging.getLogger("good").info("still served")

if __name__ == "__main__":
    configure()
    listener = forksafe_logging.QueueListener()
    secret = bytes.fromhex(os.environ["FORKSAFE_LOGGING_LISTENER"].split(":")[1])
    results = {
        "wrong key": attempt(key=b"k" * 32),
        "garbage": attempt(b"\\x00\\x00\\x00\\x05hello"),
        "pickle": attempt(struct.pack(">I", 40) + pickle.dumps(Evil()).ljust(40, b".")),
        "huge length": attempt(b"\\xff\\xff\\xff\\xff"),
    }
    p = multiprocessing.get_context(sys.argv[2]).Process(target=child_logs, name="child")
    p.start()
    p.join(60)
    got = lines()
    report(results=results, abstract=listener.address.startswith("\\0"), stats=listener.stats(),
           pwned=os.path.exists("pwned"), got=got)
"""
    )

    @START_METHODS
    def test_rejects_strangers_and_garbage(self, scenario: Scenario, method: str) -> None:
        """Wrong key, garbage and pickles are dropped and counted; nothing runs; others go on."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        # Anyone on the machine can connect to an abstract socket: the key is the guard.
        assert facts["abstract"] is sys.platform.startswith("linux")
        assert facts["results"] == {
            "wrong key": True,
            "garbage": True,
            "pickle": True,
            "huge length": True,
        }
        assert facts["stats"]["auth_failures"] == 1
        assert facts["stats"]["garbage"] == 3
        assert facts["pwned"] is False
        assert facts["got"] == ["child|good|still served"]


class TestKeepsNothingAlive:
    BODY = (
        PRELUDE
        + """
import gc, weakref

class Thing:
    pass

def log_them():
    arg, local = Thing(), Thing()
    refs = [weakref.ref(arg), weakref.ref(local)]
    logging.getLogger("w").info("with %s", arg)
    try:
        raise ValueError(local)
    except ValueError:
        logging.getLogger("w").exception("failed")
    return refs

def work(q):
    refs = log_them()
    gc.collect()
    q.put([ref() is not None for ref in refs])

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    q = ctx.Queue()
    p = ctx.Process(target=work, args=(q,))
    p.start()
    alive = q.get(timeout=30)
    p.join(30)
    report(alive=alive)
"""
    )

    @START_METHODS
    def test_arguments_and_tracebacks_are_let_go(self, scenario: Scenario, method: str) -> None:
        """A sender keeps no record it has sent: its arguments and traceback are freed."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        assert facts["alive"] == [False, False]


class TestShutdown:
    BODY = (
        PRELUDE
        + """
import socket, time

def work():
    for i in range(5000):
        logging.getLogger("w").info("%d", i)

if __name__ == "__main__":
    configure()
    listener = forksafe_logging.QueueListener()
    # A misbehaving process: authenticated, then half a frame, then silence.
    stuck = socket.socket(socket.AF_UNIX)
    stuck.connect(listener.address)
    from forksafe_logging import _endpoint, _server
    nonce = os.urandom(32)
    stuck.sendall(nonce + _endpoint.answer(listener._server.key, nonce))
    stuck.recv(32)  # the listener's proof
    stuck.sendall(b"\\x00\\x00\\x10\\x00abc")
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(60)
    if sys.argv[3] == "uninstall":
        forksafe_logging.uninstall()
    started = time.monotonic()
    # No flush: exit (or uninstall) must handle what was sent.
    print(json.dumps({"exit_started": started}), flush=True)
"""
    )

    @START_METHODS
    @pytest.mark.parametrize("how", ["exit", "uninstall"])
    def test_everything_sent_is_handled(self, scenario: Scenario, method: str, how: str) -> None:
        """At exit or uninstall(), sent records are written; a stuck peer delays it boundedly."""
        import time

        started = time.monotonic()
        outcome = scenario.run(self.BODY, None, args=[method, how])
        assert outcome.returncode == 0, outcome.stderr
        elapsed = time.monotonic() - started
        lines = (scenario.tmp_path / "out.log").read_text().splitlines()
        assert [line.split("|")[2] for line in lines] == [str(i) for i in range(5000)]
        # SHUTDOWN_TIMEOUT is 2 s; generous margin for a loaded machine.
        assert elapsed < 60


class TestTopExitsFirst:
    BODY = """
        import json, logging, os, select, sys
        import forksafe_logging
        CHILDREN, RECORDS = 3, 20000
        done_r, done_w = os.pipe()  # EOF once every child has finished
        top = os.fork()
        if top == 0:
            os.close(done_r)
            logging.basicConfig(filename="out.log", level=logging.INFO,
                                format="%(process)d %(message)s")
            forksafe_logging.install()
            started_r, started_w = os.pipe()
            for n in range(CHILDREN):
                if os.fork() == 0:
                    err = os.open("child%d.err" % os.getpid(), os.O_WRONLY | os.O_CREAT)
                    os.dup2(err, 2)
                    for i in range(RECORDS):
                        logging.info("%d", i)
                        if i == 100:
                            os.write(started_w, b"x")
                    os._exit(0)
            for n in range(CHILDREN):
                os.read(started_r, 1)
            sys.exit(0)  # while the children log: the listener stops at exit
        os.close(done_w)
        os.waitpid(top, 0)
        ready, _, _ = select.select([done_r], [], [], 120)
        os.read(done_r, 1)
        seen = {}
        with open("out.log") as f:
            for line in f:
                pid, i = line.split()
                seen.setdefault(pid, []).append(int(i))
        fallback = {}
        for name in os.listdir("."):
            if name.startswith("child") and name.endswith(".err"):
                pid = name[len("child"):-len(".err")]
                with open(name) as f:
                    fallback[pid] = [int(line.split(":")[-1]) for line in f
                                     if line.startswith("INFO:root:")]
        print(json.dumps({"done": bool(ready), "seen": seen, "fallback": fallback}))
    """

    def test_every_record_is_written_or_on_stderr(self, scenario: Scenario) -> None:
        """Children outliving the top: each record returned is in the file or on their stderr."""
        facts = scenario.run(self.BODY, None, timeout=150).facts
        assert facts["done"] is True
        assert len(facts["fallback"]) == 3
        for pid, on_stderr in facts["fallback"].items():
            written = facts["seen"].get(pid, [])
            assert written, "nothing of child %s reached the file" % pid
            # In order, none twice, none missing: the file's part, then stderr's.
            assert sorted(written + on_stderr) == list(range(20000)), pid
            assert not set(written) & set(on_stderr)


class TestListenerContext:
    BODY = """
import contextvars, logging, multiprocessing, sys
import forksafe_logging
from scenario_lib import report

request = contextvars.ContextVar("request", default="-")

class AddRequest(logging.Filter):
    def filter(self, record):
        record.request = request.get()
        return True

def work():
    logging.getLogger("w").warning("child")

if __name__ == "__main__":
    request.set("the caller of install()")
    handler = logging.FileHandler("out.log")
    handler.setFormatter(logging.Formatter("%(request)s|%(message)s"))
    handler.addFilter(AddRequest())
    logging.getLogger().addHandler(handler)
    forksafe_logging.install()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(60)
    forksafe_logging.flush(30)
    with open("out.log") as f:
        report(flag=sys.flags.thread_inherit_context, lines=f.read().splitlines())
"""

    @pytest.mark.skipif(sys.version_info < (3, 14), reason="thread_inherit_context is new in 3.14")
    @START_METHODS
    def test_children_records_see_no_callers_context(
        self, scenario: Scenario, method: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With 3.14's thread_inherit_context, the listener still runs in an empty context."""
        monkeypatch.setenv("PYTHON_THREAD_INHERIT_CONTEXT", "1")
        facts = scenario.run(self.BODY, None, args=[method]).facts
        assert facts == {"flag": 1, "lines": ["-|child"]}
