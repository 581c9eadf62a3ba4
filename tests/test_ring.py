"""The ring: memory the listener shares with each sender for its frames (forksafe_logging._ring).

Records through it arrive whole and in order across the ring's end; a
listener asleep is woken by the sender; a sender that writes nonsense to its
ring loses its connection and nobody else's; with the ring switched off the
socket carries everything; a listener that stops while children write loses
no record without its sender showing it. Kills of senders in the middle of a
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
