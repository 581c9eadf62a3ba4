"""The process tree's listener: each guarantee of the transport, under each start method."""

from __future__ import annotations

import sys

import pytest
from conftest import Scenario

pytestmark = pytest.mark.timeout(180)

START_METHODS = pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])

#: Common top of the scenarios below: a file handler in the top process, install().
PRELUDE = """
import collections, json, logging, multiprocessing, os, signal, sys
import forksafe_logging
from scenario_lib import report

def configure():
    logging.basicConfig(filename="out.log", level=logging.INFO,
                        format="%(processName)s|%(name)s|%(message)s")
    forksafe_logging.install()

def lines():
    forksafe_logging.flush(30)
    with open("out.log", encoding="utf-8", errors="surrogateescape") as f:
        return f.read().splitlines()
"""


class TestExactlyOnceInOrder:
    BODY = (
        PRELUDE
        + """
def work(n):
    log = logging.getLogger("worker")
    for i in range(10000):
        log.info("%d %d", n, i)

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    procs = [ctx.Process(target=work, args=(n,)) for n in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    seen = collections.defaultdict(list)
    for line in lines():
        _, name, message = line.split("|")
        n, i = map(int, message.split())
        seen[n].append(i)
    report(exitcodes=[p.exitcode for p in procs],
           in_order=[seen[n] == list(range(10000)) for n in range(8)],
           counts=[len(seen[n]) for n in range(8)])
"""
    )

    @START_METHODS
    def test_8_processes_10000_records(self, scenario: Scenario, method: str) -> None:
        """8 processes x 10,000 records: each handled once, in each process's order."""
        facts = scenario.run(self.BODY, None, args=[method], timeout=170).facts
        print("records per process:", facts["counts"])
        assert facts["exitcodes"] == [0] * 8
        assert facts["counts"] == [10000] * 8
        assert facts["in_order"] == [True] * 8


class TestKill:
    BODY = (
        PRELUDE
        + """
def work():
    log = logging.getLogger("victim")
    for i in range(2000):
        log.info("record %d", i)
    # Killed right after the last logging call returned.
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    configure()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(60)
    got = [line.split("|")[2] for line in lines()]
    expected = ["record %d" % i for i in range(2000)]
    report(exitcode=p.exitcode, got=len(got), complete=got == expected)
"""
    )

    @START_METHODS
    def test_nothing_lost_to_sigkill(self, scenario: Scenario, method: str) -> None:
        """Every record whose call returned arrives, though the process was SIGKILLed."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        assert facts == {"exitcode": -9, "got": 2000, "complete": True}

    KILLED_MID_SEND = (
        PRELUDE
        + """
import random, time

def big():
    log = logging.getLogger("big")
    while True:
        log.info("x" * (8 << 20))

def steady(n):
    for i in range(3000):
        logging.getLogger("steady").info("%d %d", n, i)

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    rng = random.Random(int(sys.argv[3]))
    others = [ctx.Process(target=steady, args=(n,)) for n in range(3)]
    for p in others:
        p.start()
    victims = []
    for _ in range(3):
        v = ctx.Process(target=big)
        v.start()
        victims.append(v)
        # A random point of its life, most likely in the middle of an 8 MB send.
        time.sleep(rng.uniform(0.05, 0.5))
        v.kill()
        v.join(30)
    for p in others:
        p.join(120)
    # The listener still serves: a process started now gets through.
    late = ctx.Process(target=steady, args=(9,))
    late.start()
    late.join(60)
    counts = collections.Counter(line.split("|")[2].split()[0] for line in lines()
                                 if line.split("|")[1] == "steady")
    stats = forksafe_logging.QueueListener().stats()
    report(counts=counts, exitcodes=[p.exitcode for p in others + [late]],
           truncated=stats["truncated"], garbage=stats["garbage"])
"""
    )

    @START_METHODS
    @pytest.mark.parametrize("seed", [1, 2])
    def test_killed_sender_harms_nobody(self, scenario: Scenario, method: str, seed: int) -> None:
        """Senders SIGKILLed mid-record: the others' records all arrive, the listener goes on."""
        facts = scenario.run(self.KILLED_MID_SEND, None, args=[method, str(seed)]).facts
        assert facts["exitcodes"] == [0, 0, 0, 0]
        assert facts["counts"] == {"0": 3000, "1": 3000, "2": 3000, "9": 3000}
        assert facts["garbage"] == 0
        print("half-sent records dropped:", facts["truncated"])


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


class TestChannelSecurity:
    BODY = (
        PRELUDE
        + """
import pickle, socket, stat, struct

def attempt(payload_after_auth=None, key=None):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(listener.address)
    challenge = b""
    while len(challenge) < 32:
        challenge += sock.recv(32 - len(challenge))
    from forksafe_logging import _endpoint, _server
    ours = os.urandom(32)
    sock.sendall(_endpoint.answer(key or secret, challenge) + ours)
    if key is None:
        # The listener proves to a sender that knows the key that it does too.
        proof = b""
        while len(proof) < 32:
            proof += sock.recv(32 - len(proof))
        assert proof == _endpoint.listener_answer(secret, ours)
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


class TestBackpressure:
    BODY = (
        PRELUDE
        + """
from scenario_lib import Stuck
COUNT = 600
slow = Stuck()

def work(timeout):
    handler = forksafe_logging.QueueHandler(timeout=timeout) if timeout else None
    log = logging.getLogger("flood")
    if handler is not None:
        log.handlers[:] = [handler]
        log.propagate = False
    import time
    started = time.monotonic()
    for i in range(COUNT):
        log.info("%d %s", i, "z" * 10000)  # 6 MB in all: more than socket buffers hold
    with open("child.json", "w") as f:
        json.dump({"dropped": handler.dropped if handler else 0,
                   "seconds": time.monotonic() - started}, f)

if __name__ == "__main__":
    configure()
    logging.getLogger().addHandler(slow)
    timeout = float(sys.argv[3])
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work, args=(timeout,))
    p.start()
    if timeout:
        p.join(60)  # with a timeout, the child finishes on its own
    else:
        p.join(2)   # without one it waits for the listener: still running here
    waited = p.is_alive()
    slow.gate.set()
    p.join(60)
    with open("child.json") as f:
        child = json.load(f)
    report(exitcode=p.exitcode, waited=waited, dropped=child["dropped"],
           arrived=sum(1 for line in lines() if "|flood|" in line))
"""
    )

    @START_METHODS
    def test_waits_by_default(self, scenario: Scenario, method: str) -> None:
        """A listener that falls behind makes logging calls wait; nothing is dropped."""
        facts = scenario.run(self.BODY, None, args=[method, "0"]).facts
        assert facts == {"exitcode": 0, "waited": True, "dropped": 0, "arrived": 600}

    @START_METHODS
    def test_timeout_drops_and_counts(self, scenario: Scenario, method: str) -> None:
        """With a timeout, calls give up and count what they dropped; the rest arrives."""
        facts = scenario.run(self.BODY, None, args=[method, "0.01"]).facts
        assert facts["exitcode"] == 0
        assert facts["waited"] is False
        assert facts["dropped"] > 0
        assert facts["arrived"] + facts["dropped"] >= 599  # one may be half-sent
        assert facts["arrived"] + facts["dropped"] <= 600


class TestSignalMidSend:
    BODY = (
        PRELUDE
        + """
from scenario_lib import Stuck
slow = Stuck()

class Interrupted(BaseException):
    pass

def on_alarm(signum, frame):
    raise Interrupted()

def work(interrupted):
    signal.signal(signal.SIGALRM, on_alarm)
    log = logging.getLogger("flood")
    where = None
    for attempt in range(50):
        # The listener is held in Stuck: the socket's buffers fill and a
        # send blocks part-way through a frame, where the alarm finds it.
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        try:
            while True:
                log.info("%s", "z" * 100000)
        except Interrupted as exc:
            names = []
            tb = exc.__traceback__
            while tb is not None:
                names.append(tb.tb_frame.f_code.co_name)
                tb = tb.tb_next
            # Raised where the channel was blocked sending (sendall).
            if names[-1] == "on_alarm" and names[-2] in ("send", "_send"):
                where = "send"
                break
    interrupted.set()
    err = os.open("child.err", os.O_WRONLY | os.O_CREAT)
    os.dup2(err, 2)
    log.info("after the interruption")
    with open("child.json", "w") as f:
        json.dump({"where": where}, f)

if __name__ == "__main__":
    configure()
    logging.getLogger().addHandler(slow)
    ctx = multiprocessing.get_context(sys.argv[2])
    interrupted = ctx.Event()
    p = ctx.Process(target=work, args=(interrupted,))
    p.start()
    interrupted.wait(60)
    slow.gate.set()
    p.join(60)
    with open("child.json") as f:
        child = json.load(f)
    with open("child.err") as f:
        err = f.read()
    arrived = sum(1 for line in lines() if line.endswith("|after the interruption"))
    stats = forksafe_logging.QueueListener().stats()
    report(exitcode=p.exitcode, where=child["where"], err=err, arrived=arrived,
           truncated=stats["truncated"])
"""
    )

    @START_METHODS
    def test_next_record_arrives(self, scenario: Scenario, method: str) -> None:
        """A signal handler raising in the middle of a send spoils only that record.

        The half frame is counted by the listener; the worker's next record
        arrives over a new connection instead of following the half frame
        (where the listener would read it as the rest of the frame).
        """
        facts = scenario.run(self.BODY, None, args=[method], timeout=150).facts
        assert facts["exitcode"] == 0
        assert facts["where"] == "send"
        assert facts["arrived"] == 1
        assert "cannot be reached" not in facts["err"]
        assert facts["truncated"] == 1


class TestSignalBarrage:
    BODY = (
        PRELUDE
        + """
class Interrupted(BaseException):
    pass

armed = [False]

def on_alarm(signum, frame):
    if armed[0]:
        armed[0] = False
        raise Interrupted()

def work(q):
    signal.signal(signal.SIGALRM, on_alarm)
    log = logging.getLogger("barrage")
    returned = interrupted = 0
    # Exceptions land anywhere in the logging calls, taking and giving back
    # the channel's lock included (3.14 lets one fall in between).
    signal.setitimer(signal.ITIMER_REAL, 0.00005, 0.00005)
    for i in range(20000):
        try:
            armed[0] = True
            log.info("b %d", i)
            armed[0] = False
            returned += 1
        except Interrupted:
            interrupted += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    armed[0] = False
    log.info("the last one")  # blocks for ever if a hold was left behind...
    import threading
    other = threading.Thread(target=log.info, args=("from another thread",))
    other.start()  # ...and so does this one, if that call did not give it back
    other.join(20)
    q.put([returned, interrupted, other.is_alive()])

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    q = ctx.Queue()
    p = ctx.Process(target=work, args=(q,))
    p.start()
    returned, interrupted, blocked = q.get(timeout=100)
    p.join(30)
    forksafe_logging.flush(10)
    found = lines()
    last = sum(1 for line in found if line.endswith("|the last one"))
    other = sum(1 for line in found if line.endswith("|from another thread"))
    report(returned=returned, interrupted=interrupted, last=last, other=other, blocked=blocked)
"""
    )

    @START_METHODS
    def test_no_lock_left_taken(self, scenario: Scenario, method: str) -> None:
        """Exceptions raised from a signal handler at any point never leave a sender blocked."""
        facts = scenario.run(self.BODY, None, args=[method], timeout=110).facts
        assert facts["interrupted"] > 100  # the barrage did land in logging calls
        assert facts["last"] == 1
        assert facts["blocked"] is False
        assert facts["other"] == 1


class TestListenerGone:
    BODY = """
        import json, logging, os, select, signal, sys
        import forksafe_logging
        r, w = os.pipe()          # the grandchild learns that the top died: EOF on r
        done_r, done_w = os.pipe()  # the driver learns that the grandchild is done
        top = os.fork()
        if top == 0:
            os.close(done_r)
            logging.basicConfig(filename="out.log", level=logging.INFO)
            forksafe_logging.install()
            logged_r, logged_w = os.pipe()
            if os.fork() == 0:
                os.close(w)
                logging.info("before the top died")
                os.write(logged_w, b"x")  # the call returned: the record is on its way
                os.read(r, 1)  # returns b"" once the top is dead
                err = os.open("child.err", os.O_WRONLY | os.O_CREAT)
                os.dup2(err, 2)
                for i in range(3):
                    logging.warning("after %d", i)
                os.write(done_w, b"x")
                os._exit(0)
            os.read(logged_r, 1)
            forksafe_logging.flush(10)
            os.kill(os.getpid(), signal.SIGKILL)
        os.close(w)
        os.close(done_w)
        os.waitpid(top, 0)
        ready, _, _ = select.select([done_r], [], [], 30)
        with open("child.err") as f, open("out.log") as g:
            err = f.read()
            before = g.read()
        print(json.dumps({"done": bool(ready), "err": err, "before": before}))
    """

    def test_falls_back_to_stderr(self, scenario: Scenario) -> None:
        """With the top process dead, a child's logging calls write to stderr after one warning."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["done"] is True
        assert facts["before"] == "INFO:root:before the top died\n"
        err = facts["err"].splitlines()
        assert len(err) == 4
        assert err[0].startswith("forksafe_logging: the log listener")
        assert err[1:] == ["WARNING:root:after 0", "WARNING:root:after 1", "WARNING:root:after 2"]


class TestTopKilled:
    BODY = """
        import json, logging, os, select, signal, threading
        import forksafe_logging
        dead_r, dead_w = os.pipe()  # EOF in the child once the top is dead
        done_r, done_w = os.pipe()  # the driver learns that the child is done
        top = os.fork()
        if top == 0:
            os.close(done_r)
            never = threading.Event()

            stuck_r, stuck_w = os.pipe()

            class StuckAt100(logging.Handler):
                def emit(self, record):
                    if record.getMessage() == "r 100":
                        os.write(stuck_w, b"x")
                        never.wait()  # the listener never gets past this record

            logging.basicConfig(filename="out.log", level=logging.INFO)
            logging.getLogger().addHandler(StuckAt100())
            forksafe_logging.install()
            half_r, half_w = os.pipe()
            go_r, go_w = os.pipe()
            if os.fork() == 0:
                os.close(dead_w)
                err = os.open("child.err", os.O_WRONLY | os.O_CREAT)
                os.dup2(err, 2)
                for i in range(100):
                    logging.info("r %d", i)
                os.write(half_w, b"x")
                os.read(go_r, 1)
                for i in range(100, 200):
                    logging.info("r %d", i)  # returns: in the kernel's buffers
                os.write(half_w, b"x")
                os.read(dead_r, 1)  # b"": the top is dead
                logging.warning("after")
                os.write(done_w, b"x")
                os._exit(0)
            os.read(half_r, 1)
            forksafe_logging.flush(10)  # r 0-99 handled, and confirmed
            os.write(go_w, b"x")
            os.read(half_r, 1)
            os.read(stuck_r, 1)  # r 100 written, the listener stuck
            os.kill(os.getpid(), signal.SIGKILL)
        os.close(dead_r)
        os.close(dead_w)
        os.close(done_w)
        os.waitpid(top, 0)
        ready, _, _ = select.select([done_r], [], [], 30)
        with open("child.err") as f, open("out.log") as g:
            err = f.read()
            written = g.read()
        print(json.dumps({"done": bool(ready), "err": err, "written": written}))
    """

    def test_unconfirmed_records_go_to_stderr(self, scenario: Scenario) -> None:
        """A SIGKILLed top: what it had not handled is on its senders' stderr, nothing else."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["done"] is True
        # The file: r 0 to r 100 (the handler stuck on r 100 comes after the file's).
        assert facts["written"].splitlines() == ["INFO:root:r %d" % i for i in range(101)]
        err = facts["err"].splitlines()
        assert "before it confirmed 100 record(s)" in err[0]
        # What the top never confirmed, and only that: r 0-99 were confirmed.
        assert err[1:101] == ["INFO:root:r %d" % i for i in range(100, 200)]
        assert err[101].startswith("forksafe_logging: the log listener")
        assert err[102:] == ["WARNING:root:after"]

    INTERRUPTED = """
        import json, logging, os, select, signal, threading
        import forksafe_logging
        dead_r, dead_w = os.pipe()
        done_r, done_w = os.pipe()
        top = os.fork()
        if top == 0:
            os.close(done_r)
            never = threading.Event()

            stuck_r, stuck_w = os.pipe()

            class Stuck(logging.Handler):
                def emit(self, record):
                    os.write(stuck_w, b"x")
                    never.wait()  # the listener handles nothing past the first record

            logging.basicConfig(filename="out.log", level=logging.INFO)
            logging.getLogger().addHandler(Stuck())
            forksafe_logging.install()
            interrupted_r, interrupted_w = os.pipe()
            if os.fork() == 0:
                os.close(dead_w)
                err = os.open("child.err", os.O_WRONLY | os.O_CREAT)
                os.dup2(err, 2)
                for i in range(10):
                    logging.info("r %d", i)

                class TimeLimit(BaseException):
                    pass

                def expire(signum, frame):
                    raise TimeLimit()

                signal.signal(signal.SIGALRM, expire)
                # Blocks once the socket's buffers are full (nobody reads),
                # part of it sent: the alarm raises in the middle.
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                try:
                    logging.info("huge %s", "x" * (16 << 20))
                    interrupted = False
                except TimeLimit:
                    interrupted = True
                os.write(interrupted_w, b"x")
                os.read(dead_r, 1)  # b"": the top is dead
                logging.warning("after")
                os.write(done_w, json.dumps(interrupted).encode())
                os._exit(0)
            os.read(interrupted_r, 1)
            os.read(stuck_r, 1)  # r 0 written, the listener stuck
            os.kill(os.getpid(), signal.SIGKILL)
        os.close(dead_r)
        os.close(dead_w)
        os.close(done_w)
        os.waitpid(top, 0)
        ready, _, _ = select.select([done_r], [], [], 30)
        interrupted = json.loads(os.read(done_r, 100)) if ready else None
        with open("child.err") as f, open("out.log") as g:
            err = f.read()
            written = g.read()
        print(json.dumps({"interrupted": interrupted, "err": err, "written": written}))
    """

    AT_EXIT = """
        import json, logging, multiprocessing, os, select, signal, sys, threading
        import forksafe_logging

        def child(dead_r, dead_w, logged_w):
            os.close(dead_w)
            err = os.open("child.err", os.O_WRONLY | os.O_CREAT)
            os.dup2(err, 2)
            for i in range(10):
                logging.info("r %d", i)
            os.write(logged_w, b"x")
            os.read(dead_r, 1)  # b"": the top is dead
            # and this process ends without logging again

        if __name__ == "__main__":
            dead_r, dead_w = os.pipe()  # EOF in the child once the top is dead
            gone_r, gone_w = os.pipe()  # EOF here once the child has exited too
            top = os.fork()
            if top == 0:
                os.close(gone_r)
                never = threading.Event()

                stuck_r, stuck_w = os.pipe()

                class Stuck(logging.Handler):
                    def emit(self, record):
                        os.write(stuck_w, b"x")
                        never.wait()

                logging.basicConfig(filename="out.log", level=logging.INFO)
                logging.getLogger().addHandler(Stuck())
                forksafe_logging.install()
                logged_r, logged_w = os.pipe()
                if sys.argv[2] == "exit":
                    if os.fork() == 0:
                        child(dead_r, dead_w, logged_w)
                        sys.exit(0)  # atexit handlers run
                else:
                    ctx = multiprocessing.get_context("fork")
                    ctx.Process(target=child, args=(dead_r, dead_w, logged_w)).start()
                os.close(gone_w)
                os.read(logged_r, 1)
                os.read(stuck_r, 1)  # r 0 written, the listener stuck
                os.kill(os.getpid(), signal.SIGKILL)
            os.close(dead_r)
            os.close(dead_w)
            os.close(gone_w)
            os.waitpid(top, 0)
            ready, _, _ = select.select([gone_r], [], [], 30)
            with open("child.err") as f, open("out.log") as g:
                err = f.read()
                written = g.read()
            print(json.dumps({"exited": bool(ready), "err": err, "written": written}))
    """

    @pytest.mark.parametrize("how", ["exit", "multiprocessing"])
    def test_shown_at_exit(self, scenario: Scenario, how: str) -> None:
        """A sender that does not log after the top died shows the unconfirmed records at exit."""
        facts = scenario.run(self.AT_EXIT, None, args=[how]).facts
        assert facts["exited"] is True
        assert facts["written"].splitlines() == ["INFO:root:r 0"]
        err = facts["err"].splitlines()
        assert "before it confirmed 10 record(s)" in err[0]
        assert err[1:] == ["INFO:root:r %d" % i for i in range(10)]

    def test_connection_given_up_mid_record(self, scenario: Scenario) -> None:
        """Records sent on a connection abandoned mid-frame are still shown if the top dies."""
        facts = scenario.run(self.INTERRUPTED, None).facts
        assert facts["interrupted"] is True
        assert facts["written"].splitlines() == ["INFO:root:r 0"]
        err = facts["err"].splitlines()
        assert "before it confirmed 10 record(s)" in err[0]
        assert err[1:11] == ["INFO:root:r %d" % i for i in range(10)]
        assert err[11].startswith("forksafe_logging: the log listener")
        assert err[12:] == ["WARNING:root:after"]


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
    challenge = stuck.recv(32)
    from forksafe_logging import _endpoint, _server
    stuck.sendall(_endpoint.answer(listener._server.key, challenge) + os.urandom(32))
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


class TestNoDoubleWrites:
    SPAWN_MODULE_CONFIG = """
import logging, multiprocessing, sys
import forksafe_logging
# Runs again in every spawn child: it re-imports this module.
logging.basicConfig(filename="out.log", level=logging.INFO, format="%(processName)s %(message)s")

def work():
    logging.info("from the child")

if __name__ == "__main__":
    forksafe_logging.install()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work, name="child")
    p.start()
    p.join(60)
    logging.info("from the top")
    forksafe_logging.flush(10)
    with open("out.log") as f:
        print(__import__("json").dumps({"lines": f.read().splitlines()}))
"""

    @START_METHODS
    def test_module_level_config_in_child(self, scenario: Scenario, method: str) -> None:
        """A child re-running module-level basicConfig writes each record once, via the top."""
        facts = scenario.run(self.SPAWN_MODULE_CONFIG, None, args=[method]).facts
        assert sorted(facts["lines"]) == ["MainProcess from the top", "child from the child"]


class TestChildReconfigures:
    BODY = (
        PRELUDE
        + """
import logging.config

def work():
    # What gevent's monkey.patch_all() requires of every entry of the list of
    # handlers (gunicorn's gevent workers call it after the fork).
    lockless = [repr(ref()) for ref in logging._handlerList
                if ref() is not None and not hasattr(ref(), "lock")]
    # A worker that configures logging when it imports the application: its
    # later changes are its own, so its handler writes the record.
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"own": {"class": "logging.FileHandler", "filename": "child.log"}},
        "root": {"handlers": ["own"], "level": "INFO"},
    })
    logging.getLogger("c").info("after dictConfig")
    logging.shutdown()
    sys.exit(1 if lockless else 0)

if __name__ == "__main__":
    configure()
    p = multiprocessing.get_context("fork").Process(target=work)
    p.start()
    p.join(60)
    with open("child.log") as f:
        report(exitcode=p.exitcode, child=f.read())
"""
    )

    def test_dict_config_in_forked_child(self, scenario: Scenario) -> None:
        """A forwarding child can run dictConfig, and gevent can patch its handlers."""
        facts = scenario.run(self.BODY, None).facts
        assert facts == {"exitcode": 0, "child": "after dictConfig\n"}


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


class TestQuietFork:
    BODY = (
        PRELUDE
        + """
import threading, warnings

def fork_and_wait(in_child=lambda: None):
    pid = os.fork()
    if pid == 0:
        in_child()
        os._exit(0)
    os.waitpid(pid, 0)

def fork_warnings(in_child=lambda: None):
    # os.fork() reports the warning as unraisable under an "error" filter,
    # so record it instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fork_and_wait(in_child)
    return [str(w.message) for w in caught if w.category is DeprecationWarning]

if __name__ == "__main__":
    configure()
    ours = fork_warnings(lambda: logging.info("child"))  # our listener thread runs
    again = fork_warnings()  # a second fork: on 3.13 the filter carries over to it
    # Somebody else's thread: then the warning is theirs, and it stays.
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    theirs = fork_warnings()
    stop.set()
    t.join()
    report(lines=lines(), ours=ours + again, theirs=len(theirs))
"""
    )

    def test_our_thread_causes_no_warning(self, scenario: Scenario) -> None:
        """3.12+: the listener thread is not why fork() warns; a user's thread still is."""
        facts = scenario.run(self.BODY, None).facts
        assert facts["lines"] == ["MainProcess|root|child"]
        assert facts["ours"] == []
        assert facts["theirs"] == (1 if sys.version_info >= (3, 12) else 0)

    def test_control_without_the_filter(self, scenario: Scenario) -> None:
        """Control: with the filter disabled, 3.12+ does warn about our listener thread."""
        body = self.BODY.replace(
            "    configure()\n",
            "    configure()\n    from forksafe_logging import _compat\n"
            "    _compat.quiet_fork_warning = lambda n: False\n",
        )
        facts = scenario.run(body, None).facts
        assert len(facts["ours"]) == (2 if sys.version_info >= (3, 12) else 0)


class TestDictConfig:
    BODY = (
        PRELUDE
        + """
import logging.config

CONFIG = {
    "version": 1,
    "formatters": {"plain": {"format": "%(processName)s %(message)s"}},
    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "out.log", "formatter": "plain"},
        "other": {"class": "logging.FileHandler", "filename": "other.log", "formatter": "plain"},
        "aqueue": {"class": "forksafe_logging.QueueHandler", "handlers": ["file", "other"]},
    },
    "root": {"handlers": ["aqueue"], "level": "INFO"},
}
logging.config.dictConfig(CONFIG)

def work():
    logging.info("from the child")

if __name__ == "__main__":
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work, name="child")
    p.start()
    p.join(60)
    logging.info("from the top")
    forksafe_logging.flush(10)
    with open("out.log") as f, open("other.log") as g:
        report(file=sorted(f.read().splitlines()), other=sorted(g.read().splitlines()))
"""
    )

    @START_METHODS
    def test_queue_handler_in_dict_config(self, scenario: Scenario, method: str) -> None:
        """dictConfig's {"class": "forksafe_logging.QueueHandler", "handlers": [...]} works."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        expected = ["MainProcess from the top", "child from the child"]
        assert facts == {"file": expected, "other": expected}

    AGAIN = """
import json, logging, logging.config, multiprocessing, os, sys
from scenario_lib import report

def configure():
    # The same dictConfig in the top and, again, in each worker (as uvicorn
    # does with --log-config); no install() anywhere.
    logging.config.dictConfig({
        "version": 1,
        "formatters": {"plain": {"format": "%(writer)s %(processName)s %(message)s"}},
        "filters": {"stamp": {"()": __name__ + ".stamp"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": "out.log", "delay": True,
                     "formatter": "plain", "filters": ["stamp"]},
            "tree": {"class": "forksafe_logging.QueueHandler", "handlers": ["file"]},
        },
        "root": {"handlers": ["tree"], "level": "INFO"},
    })

def stamp():
    def add_writer(record):
        record.writer = "top" if os.getpid() == TOP else "worker"
        return True
    return add_writer

def work(top):
    global TOP
    TOP = top
    configure()
    logging.info("from the child")

if __name__ == "__main__":
    TOP = os.getpid()
    configure()
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work, args=(TOP,), name="child")
    p.start()
    p.join(60)
    logging.info("from the top")
    import forksafe_logging
    forksafe_logging.flush(10)
    with open("out.log") as f:
        report(file=sorted(f.read().splitlines()))
"""

    @START_METHODS
    def test_worker_configured_again(self, scenario: Scenario, method: str) -> None:
        """A worker applying the top's dictConfig again sends to the top's listener."""
        facts = scenario.run(self.AGAIN, None, args=[method]).facts
        assert facts == {"file": ["top MainProcess from the top", "top child from the child"]}


class TestSubprocess:
    BODY = (
        PRELUDE
        + """
import subprocess

CHILD = (
    "import logging, sys, forksafe_logging\\n"
    "logging.basicConfig(filename='child-own.log', format='%(message)s')\\n"
    "if 'install' in sys.argv[1]:\\n"
    "    forksafe_logging.install()\\n"  # a tree of its own: its records stay its own
    "if 'attach' in sys.argv[1]:\\n"
    "    forksafe_logging.attach()\\n"   # joins: its own config is replaced by forwarding
    "logging.getLogger('sub').warning('from a subprocess')\\n"
)

if __name__ == "__main__":
    configure()
    code = subprocess.run([sys.executable, "-c", CHILD, sys.argv[2]], timeout=60).returncode
    own = open("child-own.log").read() if os.path.exists("child-own.log") else None
    report(code=code, lines=lines(), own=own)
"""
    )

    def test_attach_from_subprocess(self, scenario: Scenario) -> None:
        """A Python subprocess that calls attach() forwards to the top through the environment."""
        facts = scenario.run(self.BODY, None, args=["attach"]).facts
        assert facts == {"code": 0, "lines": ["MainProcess|sub|from a subprocess"], "own": ""}

    def test_attach_after_install(self, scenario: Scenario) -> None:
        """attach() after the subprocess's own install() still joins the tree."""
        facts = scenario.run(self.BODY, None, args=["install-attach"]).facts
        assert facts == {"code": 0, "lines": ["MainProcess|sub|from a subprocess"], "own": ""}

    def test_install_in_subprocess_stays_separate(self, scenario: Scenario) -> None:
        """A subprocess calling install() (not attach()) keeps its own logging."""
        facts = scenario.run(self.BODY, None, args=["install"]).facts
        assert facts == {"code": 0, "lines": [], "own": "from a subprocess\n"}

    def test_attach_without_a_tree(self, scenario: Scenario) -> None:
        """attach() in a process no tree started is a clear error."""
        body = """
            import os, forksafe_logging
            os.environ.pop("FORKSAFE_LOGGING_LISTENER", None)
            try:
                forksafe_logging.attach()
            except RuntimeError as exc:
                print(exc)
        """
        outcome = scenario.run(body, None)
        assert outcome.returncode == 0, outcome.stderr
        assert "FORKSAFE_LOGGING_LISTENER is not set" in outcome.stdout


class TestChildConfiguresWhileParentWasWriting:
    BODY = """
import fcntl, logging, logging.config, os, termios, threading, time
import forksafe_logging
from scenario_lib import child, install_from_argv, report

r, w = os.pipe()  # nobody reads r: the writer blocks once the pipe is full
stream = os.fdopen(w, "w")
logging.getLogger().addHandler(logging.StreamHandler(stream))
install_from_argv()
blocked = threading.Thread(
    target=lambda: logging.getLogger("t").warning("x" * (1 << 20)), daemon=True)
blocked.start()

def pipe_bytes():
    return int.from_bytes(fcntl.ioctl(r, termios.FIONREAD, b"\\0\\0\\0\\0"), "little")

# The thread is inside write(), holding the handler's and the stream's locks,
# once the pipe holds all it can and the thread is still running.
deadline = time.monotonic() + 10
last = -1
while time.monotonic() < deadline:
    now = pipe_bytes()
    if now == last and now > 0:
        break
    last = now
    blocked.join(0.05)
full = pipe_bytes()

def configure_in_child():
    # What a worker does when importing an application that configures logging.
    logging.config.dictConfig({"version": 1, "root": {"level": "INFO"}})

outcome = child(configure_in_child, timeout=5)
report(outcome=outcome, writer_blocked=blocked.is_alive(), full=full,
       unchanged=pipe_bytes() == full)
os._exit(0)  # logging.shutdown() here would wait for the blocked writer
"""

    def test_dict_config_in_child_never_flushes_inherited_handlers(
        self, scenario: Scenario
    ) -> None:
        """A forwarding child's dictConfig leaves the inherited handlers alone: no hang."""
        facts = scenario.run(self.BODY, {}).facts
        assert facts["writer_blocked"]
        assert facts["outcome"] == "ok"
        # Nothing of the parent's half-written record was written by the child.
        assert facts["unchanged"]


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


class TestRecovery:
    """One fault costs one record at most, never the worker's channel."""

    BACKLOG = (
        PRELUDE
        + """
import socket
from scenario_lib import Stuck
slow = Stuck()

def stall():
    logging.getLogger("slow").info("the listener waits in Stuck while this is handled")

def work(tried, go):
    err = os.open("child.err", os.O_WRONLY | os.O_CREAT)
    os.dup2(err, 2)
    hurried = forksafe_logging.QueueHandler(timeout=0.5)
    log = logging.getLogger("hurried")
    log.handlers[:] = [hurried]
    log.propagate = False
    log.info("during")  # the listener's backlog is full: dropped, counted
    tried.set()
    go.wait(60)
    logging.getLogger("patient").info("after")  # waits out the pause, then connects
    with open("child.json", "w") as f:
        json.dump({"dropped": hurried.dropped}, f)

if __name__ == "__main__":
    configure()
    logging.getLogger("slow").addHandler(slow)
    ctx = multiprocessing.get_context(sys.argv[2])
    staller = ctx.Process(target=stall)
    staller.start()
    slow.entered.wait(60)  # the listener thread is stuck: it accepts nobody
    filler = []
    address = forksafe_logging.QueueListener().address
    while True:  # fill the listen backlog
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(address)
        except BlockingIOError:
            sock.close()
            break
        filler.append(sock)
    tried, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=work, args=(tried, go))
    p.start()
    tried.wait(60)
    for sock in filler:
        sock.close()
    slow.gate.set()
    go.set()
    p.join(60)
    staller.join(60)
    with open("child.json") as f:
        child = json.load(f)
    with open("child.err") as f:
        err = f.read()
    arrived = [line.split("|")[2] for line in lines() if "|hurried|" in line or "|patient|" in line]
    report(exitcode=p.exitcode, backlog=len(filler), dropped=child["dropped"], err=err,
           arrived=arrived)
"""
    )

    @START_METHODS
    def test_full_backlog_drops_one_record(self, scenario: Scenario, method: str) -> None:
        """connect() on a full backlog (EAGAIN) drops that record, counted; the next arrives."""
        facts = scenario.run(self.BACKLOG, None, args=[method], timeout=150).facts
        assert facts["exitcode"] == 0
        assert facts["backlog"] > 0
        assert facts["dropped"] == 1
        assert facts["arrived"] == ["after"]
        assert "cannot be reached" not in facts["err"]

    REJECTED = (
        PRELUDE
        + """
from forksafe_logging import _wire

def work(rejected, go):
    # A sender that does not know the top's limit (a forked one inherits it).
    _wire.MAX_FRAME = 256 * 1024 * 1024
    err = os.open("child.err", os.O_WRONLY | os.O_CREAT)
    os.dup2(err, 2)
    log = logging.getLogger("w")
    log.info("before")
    log.info("%s", "x" * 100000)  # over the top's limit: it drops the connection
    rejected.wait(60)
    log.info("after")

if __name__ == "__main__":
    configure()
    # The top accepts frames of 64 KiB at most: a real limit, reached for real.
    _wire.MAX_FRAME = 64 * 1024
    ctx = multiprocessing.get_context(sys.argv[2])
    rejected, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=work, args=(rejected, go))
    p.start()
    listener = forksafe_logging.QueueListener()
    while listener.stats()["garbage"] == 0 and p.is_alive():
        listener.flush(1)
    rejected.set()
    p.join(60)
    with open("child.err") as f:
        err = f.read()
    report(exitcode=p.exitcode, garbage=listener.stats()["garbage"], err=err,
           arrived=[line.split("|")[2] for line in lines() if "|w|" in line])
"""
    )

    @START_METHODS
    def test_rejected_frame_costs_the_connection(self, scenario: Scenario, method: str) -> None:
        """A connection the listener drops is made again for the next record."""
        facts = scenario.run(self.REJECTED, None, args=[method], timeout=150).facts
        assert facts["exitcode"] == 0
        assert facts["garbage"] == 1
        assert facts["arrived"] == ["before", "after"]
        assert "cannot be reached" not in facts["err"]

    OVERSIZED = (
        PRELUDE
        + """
from forksafe_logging import _wire

def work():
    # The same limit in the child: it cuts what the top would refuse.
    _wire.MAX_FRAME = 64 * 1024
    log = logging.getLogger("w")
    log.info("%s", "x" * 100000)
    log.info("after")

if __name__ == "__main__":
    configure()
    _wire.MAX_FRAME = 64 * 1024
    p = multiprocessing.get_context(sys.argv[2]).Process(target=work)
    p.start()
    p.join(60)
    arrived = [line.split("|")[2] for line in lines() if "|w|" in line]
    report(exitcode=p.exitcode, garbage=forksafe_logging.QueueListener().stats()["garbage"],
           first=arrived[0][:10], note=arrived[0][2048:], after=arrived[1:])
"""
    )

    @START_METHODS
    def test_oversized_record_crosses_cut(self, scenario: Scenario, method: str) -> None:
        """A record over the listener's frame limit arrives cut, saying so; so does the next."""
        facts = scenario.run(self.OVERSIZED, None, args=[method], timeout=150).facts
        assert facts["exitcode"] == 0
        assert facts["garbage"] == 0
        assert facts["first"] == "x" * 10
        assert facts["note"].startswith(" [forksafe_logging: record of ")
        assert facts["note"].endswith(" cut to fit the listener's limit of 65536]")
        assert facts["after"] == ["after"]
