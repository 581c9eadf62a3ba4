"""A sender's connection to the listener.

Backpressure, signals mid-send, a listener gone or killed, recovery from
one-off faults.
"""

from __future__ import annotations

import pytest
from conftest import PRELUDE, START_METHODS, Scenario

pytestmark = pytest.mark.timeout(180)


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
        # The listener is held in Stuck: the socket's buffers, or the ring
        # (1 MiB), fill and a send blocks part-way through a frame larger
        # than either, where the alarm finds it.
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        try:
            while True:
                log.info("%s", "z" * (3 << 20))
        except Interrupted as exc:
            names = []
            tb = exc.__traceback__
            while tb is not None:
                names.append(tb.tb_frame.f_code.co_name)
                tb = tb.tb_next
            # Raised where the channel was blocked sending: in sendall(), or
            # waiting for room in the ring (_news polls the socket).
            if names[-1] == "on_alarm" and names[-2] in ("send", "_send", "_news"):
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
