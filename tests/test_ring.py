"""The ring: memory the listener shares with each sender for its frames (forksafe_logging._ring).

Records through it arrive whole and in order across the ring's end; a
listener asleep is woken by the sender; a sender that writes nonsense to its
ring loses its connection and nobody else's; with the ring switched off the
socket carries everything; a listener that stops while children write loses
no record without its sender showing it, whether the record came before its
last look or after; forked children let go of the rings they inherited.
Kills of senders in the middle of a
record are test_transport's (TestKill) and test_chaos's, which run with the ring.
"""

from __future__ import annotations

import sys

import pytest
from conftest import PRELUDE, START_METHODS, Scenario

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="rings are made with memfd_create (Linux)"
    ),
]


def _machine_has_rings() -> bool:
    from forksafe_logging import _ring

    return _ring.supported()


needs_rings = pytest.mark.skipif(
    not _machine_has_rings(), reason="no ring on this machine (x86-64 Linux only): see _ring"
)


class TestRecordsThroughTheRing:
    BODY = (
        PRELUDE
        + """
PAD = "abcdefghij" * 40

def work(n):
    log = logging.getLogger("w")
    for i in range(3000):
        log.info("%d %d %s", n, i, PAD)

if __name__ == "__main__":
    if sys.argv[3] == "off":
        os.environ["FORKSAFE_LOGGING_RING"] = "0"
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    procs = [ctx.Process(target=work, args=(n,)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    seen = collections.defaultdict(list)
    whole = True
    for line in lines():
        _, _, message = line.split("|")
        n, i, pad = message.split()
        seen[int(n)].append(int(i))
        whole = whole and pad == PAD
    stats = forksafe_logging.QueueListener().stats()
    report(exitcodes=[p.exitcode for p in procs], whole=whole,
           in_order=[seen[n] == list(range(3000)) for n in range(3)],
           rings=stats["rings"], connections=stats["connections"],
           garbage=stats["garbage"], truncated=stats["truncated"])
"""
    )

    @needs_rings
    @START_METHODS
    def test_each_record_once_in_order(self, scenario: Scenario, method: str) -> None:
        """3 processes x 3,000 records of 420 bytes: each ring goes round (1 MiB) and all arrive."""
        facts = scenario.run(self.BODY, None, args=[method, "on"], timeout=170).facts
        assert facts["exitcodes"] == [0] * 3
        assert facts["in_order"] == [True] * 3
        assert facts["whole"] is True
        assert facts["rings"] == facts["connections"] >= 3
        assert facts["garbage"] == facts["truncated"] == 0

    @START_METHODS
    def test_switched_off_the_socket_carries_them(self, scenario: Scenario, method: str) -> None:
        """With FORKSAFE_LOGGING_RING=0 in the top, no ring is made and nothing changes."""
        facts = scenario.run(self.BODY, None, args=[method, "off"], timeout=170).facts
        assert facts["exitcodes"] == [0] * 3
        assert facts["in_order"] == [True] * 3
        assert facts["whole"] is True
        assert facts["rings"] == 0
        assert facts["connections"] >= 3


class TestForkedChildrenLetGo:
    BODY = (
        PRELUDE
        + """
from scenario_lib import mapped_here

def rings_here():
    return mapped_here("forksafe-logging-ring")

def in_a_child(then=None):
    \"\"\"What a child forked now finds of rings (before it logs).\"\"\"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, json.dumps(rings_here()).encode())
        if then is not None:
            then()
        logging.shutdown()
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        found = json.loads(f.read())
    _, status = os.waitpid(pid, 0)
    return found + [os.waitstatus_to_exitcode(status)]

def work(n, conn):
    log = logging.getLogger("w")
    log.info("%d before", n)
    conn.send(in_a_child())  # a sender's child
    conn.recv()
    log.info("%d after", n)

def top_child_logs():
    logging.getLogger("child").info("from the top's child")

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    pipes = [ctx.Pipe() for _ in range(2)]
    procs = [ctx.Process(target=work, args=(n, pipes[n][1])) for n in range(2)]
    for p in procs:
        p.start()
    grandchildren = [mine.recv() for mine, _ in pipes]
    in_top = rings_here()
    if sys.argv[3] == "viewed":
        # As a listener thread frozen by the fork in the middle of a copy
        # out of a ring would hold: that ring cannot be unmapped.
        from forksafe_logging import _ring
        readers = [end for end in _ring.mapped.values() if isinstance(end, _ring.Reader)]
        held = readers[0]._view[4096:4104]
    top_child = in_a_child(top_child_logs)
    for mine, _ in pipes:
        mine.send("go")
    for p in procs:
        p.join(60)
    report(exitcodes=[p.exitcode for p in procs], grandchildren=grandchildren,
           in_top=in_top, top_child=top_child, lines=sorted(lines()),
           names=[p.name for p in procs])
"""
    )

    @needs_rings
    @START_METHODS
    @pytest.mark.parametrize("view", ["", "viewed"])
    def test_no_child_keeps_a_ring(self, scenario: Scenario, method: str, view: str) -> None:
        """A forked child unmaps the rings it inherited and writes nothing to them.

        A child of the top would otherwise pin every sender's ring while it
        lives (a recycled pool: the square of its size); the connections it
        inherited go on, and the child has its own. A ring the fork caught
        in the middle of a copy stays mapped, and the child's hook goes on.
        """
        outcome = scenario.run(self.BODY, None, args=[method, view], timeout=170)
        facts = outcome.facts
        assert "Exception ignored" not in outcome.stderr
        assert facts["exitcodes"] == [0, 0]
        assert facts["in_top"][0] >= 2  # the two senders' rings, mapped
        if view:
            assert facts["top_child"][0] == 1
            assert facts["top_child"][2] == 0
        else:
            assert facts["top_child"] == [0, 0, 0]
        assert facts["grandchildren"] == [[0, 0, 0], [0, 0, 0]]
        first, second = facts["names"]
        assert facts["lines"] == sorted(
            [
                first + "|w|0 before",
                second + "|w|1 before",
                first + "|w|0 after",
                second + "|w|1 after",
                "MainProcess|child|from the top's child",
            ]
        )


class TestWakeUp:
    BODY = (
        PRELUDE
        + """
import time
from forksafe_logging import _loop, _ring
from forksafe_logging._state import state

# Asleep, the listener would look at the rings again only after this: the
# second record can arrive only if its sender wakes the listener.
_loop.RING_BACKSTOP = 3600.0

def work(go):
    log = logging.getLogger("w")
    log.info("first")
    go.recv()
    log.info("second")
    # Alive until the parent has looked: its end would make the listener
    # read the ring without being woken.
    go.recv()

def in_file(text, seconds):
    # Not lines(): its flush() would wake the listener itself.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open("out.log") as f:
            if text in f.read():
                return True
        time.sleep(0.01)
    return False

def asleep(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rings = state.server.turns.rings
        if rings and all(r._words[16] == _ring.IDLE for r in rings):
            return True
        time.sleep(0.01)
    return False

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    go, go_child = ctx.Pipe()
    p = ctx.Process(target=work, args=(go_child,))
    p.start()
    first = in_file("|w|first", 60)
    slept = asleep(60)
    go.send("go")
    second = in_file("|w|second", 30)
    go.send("done")
    p.join(60)
    report(first=first, slept=slept, second=second, exitcode=p.exitcode,
           rings=forksafe_logging.QueueListener().stats()["rings"])
"""
    )

    @needs_rings
    @START_METHODS
    def test_a_sleeping_listener_is_woken(self, scenario: Scenario, method: str) -> None:
        """A record committed while the listener sleeps wakes it (one wake-up frame)."""
        facts = scenario.run(self.BODY, None, args=[method], timeout=170).facts
        assert facts["rings"] >= 1
        del facts["rings"]
        assert facts == {"first": True, "slept": True, "second": True, "exitcode": 0}


class TestHostileRing:
    BODY = (
        PRELUDE
        + """
import mmap, socket, struct
from forksafe_logging import _endpoint, _ring, _wire

def handshake():
    # A process that holds the key, as a sender's code does, and misuses its ring.
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(listener.address)
    nonce = os.urandom(32)
    sock.sendall(nonce + _endpoint.answer(secret, nonce))
    data, ancillary, _, _ = sock.recvmsg(32, socket.CMSG_SPACE(4))
    (fd,) = struct.unpack("i", ancillary[0][2][:4])
    return sock, fd

def connect():
    sock, fd = handshake()
    ring = mmap.mmap(fd, _ring.TOTAL_SIZE)
    os.close(fd)
    return sock, ring, memoryview(ring)[:4096].cast("Q")

def dropped(sock):
    sock.sendall(_wire.WAKE_FRAME)
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""  # the listener closed it
    except ConnectionResetError:
        return True  # closed it with the wake-up frame unread
    finally:
        sock.close()

def beyond_the_ring():
    sock, ring, words = connect()
    words[0] = _ring.DATA_SIZE + 1  # more than the ring holds
    return dropped(sock)

def backwards():
    sock, ring, words = connect()
    frame = _wire.WAKE_FRAME
    ring[4096:4096 + len(frame)] = frame
    words[0] = len(frame)
    sock.sendall(_wire.WAKE_FRAME)
    listener.flush(10)
    words[0] = 1  # a count that goes back
    return dropped(sock)

def garbage():
    sock, ring, words = connect()
    ring[4096:4096 + 9] = b"\\x00\\x00\\x00\\x05hello"
    words[0] = 9
    return dropped(sock)

def reads_its_own_count():
    # R is the listener's: a sender that writes it changes nothing.
    sock, ring, words = connect()
    words[8] = 12345
    sock.sendall(_wire.WAKE_FRAME)
    listener.flush(10)
    sock.settimeout(0.2)
    try:
        sock.recv(1)
        return False
    except socket.timeout:
        return True  # still open
    finally:
        sock.close()

def shrunk():
    # The file is sealed at its size: shrinking it (which would make the
    # top's next look at the ring a SIGBUS, killing it) is refused.
    sock, fd = handshake()
    try:
        os.ftruncate(fd, 0)
        refused = False
    except PermissionError:
        refused = True
    os.close(fd)
    sock.sendall(_wire.WAKE_FRAME)
    listener.flush(10)  # the listener looks at every ring: alive after it
    sock.close()
    return refused

def child_logs():
    logging.getLogger("good").info("still served")

if __name__ == "__main__":
    configure()
    listener = forksafe_logging.QueueListener()
    secret = bytes.fromhex(os.environ["FORKSAFE_LOGGING_LISTENER"].split(":")[1])
    results = {
        "beyond the ring": beyond_the_ring(),
        "backwards": backwards(),
        "garbage": garbage(),
        "its own R": reads_its_own_count(),
        "shrunk": shrunk(),
    }
    p = multiprocessing.get_context(sys.argv[2]).Process(target=child_logs, name="child")
    p.start()
    p.join(60)
    report(results=results, stats=listener.stats(), got=lines())
"""
    )

    @needs_rings
    @START_METHODS
    def test_nonsense_in_a_ring_costs_only_its_connection(
        self, scenario: Scenario, method: str
    ) -> None:
        """Counts out of bounds or going back, garbage frames: dropped, counted; others served."""
        facts = scenario.run(self.BODY, None, args=[method]).facts
        assert facts["results"] == {
            "beyond the ring": True,
            "backwards": True,
            "garbage": True,
            "its own R": True,
            "shrunk": True,
        }
        assert facts["stats"]["garbage"] == 3
        assert facts["got"] == ["child|good|still served"]


class TestListenerStopsMidFlood:
    BODY = (
        PRELUDE
        + """
import time

def work(n, started):
    err = os.open("child%d.err" % n, os.O_WRONLY | os.O_CREAT)
    os.dup2(err, 2)
    log = logging.getLogger("w")
    for i in range(20000):
        log.info("%d %d", n, i)
        if i == 100:
            started.set()

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    events = [ctx.Event() for _ in range(3)]
    procs = [ctx.Process(target=work, args=(n, events[n])) for n in range(3)]
    for p in procs:
        p.start()
    for e in events:
        e.wait(60)
    forksafe_logging.uninstall()  # the listener stops while they write
    for p in procs:
        p.join(120)
    seen = collections.defaultdict(list)
    with open("out.log") as f:
        for line in f.read().splitlines():
            n, i = line.split("|")[2].split()
            seen[int(n)].append(int(i))
    shown = collections.defaultdict(set)
    for n in range(3):
        with open("child%d.err" % n) as f:
            for line in f.read().splitlines():
                if line.startswith("INFO:w:"):
                    shown[n].add(int(line.split()[-1]))
    report(exitcodes=[p.exitcode for p in procs],
           file_in_order=[seen[n] == sorted(set(seen[n])) for n in range(3)],
           missing=[sorted(set(range(20000)) - set(seen[n]) - shown[n])[:5] for n in range(3)],
           in_file=[len(seen[n]) for n in range(3)])
"""
    )

    @START_METHODS
    def test_no_record_lost_unshown(self, scenario: Scenario, method: str) -> None:
        """Each record is in the file (once, in order) or on its sender's stderr."""
        facts = scenario.run(self.BODY, None, args=[method], timeout=170).facts
        print("records in the file:", facts["in_file"])
        assert facts["exitcodes"] == [0] * 3
        assert facts["file_in_order"] == [True] * 3
        assert facts["missing"] == [[], [], []]


class TestStopWindow:
    BODY = (
        PRELUDE
        + """
import time
from forksafe_logging import _ring

def work(ready, go):
    err = os.open("child.err", os.O_WRONLY | os.O_CREAT)
    os.dup2(err, 2)
    log = logging.getLogger("w")
    log.info("first")
    ready.set()
    go.wait(60)
    log.info("late")
    # The connection is over: its ring let go.
    from scenario_lib import mapped_here
    mapped, _ = mapped_here("forksafe-logging-ring")
    with open("child.maps", "w") as f:
        f.write(str(mapped))
    # At once: what the logging call left unsaid is lost (pools' workers end so).
    os._exit(0)

def until_committed(reader):
    deadline = time.monotonic() + 30
    while reader._words[0] == reader.r and time.monotonic() < deadline:
        time.sleep(0.001)

if __name__ == "__main__":
    configure()
    ctx = multiprocessing.get_context(sys.argv[2])
    ready, go = ctx.Event(), ctx.Event()
    if sys.argv[3] == "stopping":
        # The listener has marked the rings STOPPING; its last look is next.
        close_all = _ring.close_all
        def in_the_window(readers, fence):
            close_all(readers, fence)
            go.set()
            for reader in readers:
                until_committed(reader)
        _ring.close_all = in_the_window
    else:
        # The listener has taken its last look; the ring is still marked
        # STOPPING ("after"), or already CLOSED.
        close = _ring.Reader.close
        def in_the_window(self):
            if sys.argv[3] == "closed":
                self.flag(_ring.CLOSED)
            if not go.is_set():
                go.set()
                until_committed(self)
            close(self)
        _ring.Reader.close = in_the_window
    p = ctx.Process(target=work, args=(ready, go))
    p.start()
    ready.wait(60)
    first = any(line.endswith("|w|first") for line in lines())
    rings = forksafe_logging.QueueListener().stats()["rings"]
    forksafe_logging.uninstall()
    p.join(60)
    with open("out.log") as f:
        in_file = [line.split("|")[2] for line in f.read().splitlines()]
    with open("child.err") as f:
        shown = [line for line in f.read().splitlines() if "late" in line]
    with open("child.maps") as f:
        mapped = int(f.read())
    report(first=first, rings=rings, exitcode=p.exitcode, in_file=in_file, shown=shown,
           mapped=mapped)
"""
    )

    @needs_rings
    @START_METHODS
    @pytest.mark.parametrize("when", ["stopping", "after", "closed"])
    def test_a_record_in_the_stop_window(self, scenario: Scenario, method: str, when: str) -> None:
        """Committed while the listener stops, by a sender that then ends with ``os._exit()``.

        Before the listener's last look (the ring marked STOPPING): the
        record is the listener's, in the file once and not on the sender's
        stderr. After it (still STOPPING, or CLOSED): nobody will read the
        ring, and the sender's logging call shows the record before it
        returns; taken for the listener's, it would be lost.
        """
        facts = scenario.run(self.BODY, None, args=[method, when], timeout=170).facts
        assert facts["first"] is True
        assert facts["rings"] >= 1
        assert facts["exitcode"] == 0
        assert facts["mapped"] == 0
        if when == "stopping":
            assert facts["in_file"] == ["first", "late"]
            assert facts["shown"] == []
        else:
            assert facts["in_file"] == ["first"]
            assert len(facts["shown"]) == 1
            assert facts["shown"][0].endswith("late")


def test_the_fence_is_an_os_lock_under_gevent(scenario: Scenario) -> None:
    """gevent's lock is Python code: no locked instruction, no fence (a lost wake-up)."""
    pytest.importorskip("gevent")
    body = """
from gevent import monkey
monkey.patch_all()
import threading
from forksafe_logging import _ring
from scenario_lib import report

os_lock = type(monkey.get_original("_thread", "allocate_lock")())
report(patched=type(threading.Lock()) is not os_lock,
       fence=type(_ring._Fence()._lock) is os_lock)
"""
    assert scenario.run(body, None).facts == {"patched": True, "fence": True}


def test_no_ring_for_a_32_bit_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its 8-byte copies may be two 4-byte ones: a reader could see half a count."""
    from forksafe_logging import _ring

    monkeypatch.setattr(sys, "maxsize", 2**31 - 1)
    assert not _ring.supported()
