"""Where the listener is: nothing left on the filesystem, and no stranger's listener used."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from conftest import PACKAGE_HOME, TESTS, Outcome, run_in_own_group

import forksafe_logging

LINUX = sys.platform.startswith("linux")
pytestmark = pytest.mark.timeout(120)


def run_script(tmp_path: Path, body: str, *args: str, env: Dict[str, str]) -> Outcome:
    script = tmp_path / ("script%d.py" % len(list(tmp_path.glob("script*.py"))))
    script.write_text(textwrap.dedent(body))
    full = dict(os.environ)
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(PACKAGE_HOME)])
    return run_in_own_group(
        [sys.executable, str(script), *args], cwd=tmp_path, env=full, timeout=60
    )


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """An empty TMPDIR short enough for a socket path in it (pytest's are too long)."""
    path = Path(tempfile.mkdtemp(prefix="fsl", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unix_names() -> str:
    """The names of every Unix socket of the machine (abstract ones start with ``@``)."""
    return Path("/proc/net/unix").read_text()


EXIT_WAYS = """
import logging, os, signal, sys
import forksafe_logging
from forksafe_logging import _endpoint, _inbox
from scenario_lib import child, report

if sys.argv[2] == "files":
    _endpoint.ABSTRACT = False  # the socket file of systems without abstract sockets
logging.basicConfig(filename="out.log", level=logging.INFO, format="%(process)d %(message)s")
forksafe_logging.install()
assert child(lambda: logging.getLogger("child").info("from a child")) == "ok"
assert forksafe_logging.flush(10)
address = forksafe_logging.QueueListener().address
report(pid=os.getpid(), address=address.replace("\\0", "@"),
       listed=address.replace("\\0", "@") in open("/proc/net/unix").read())
how = sys.argv[1]
if how == "exit":
    sys.exit(0)
elif how == "os._exit":
    os._exit(0)
elif how == "SIGKILL":
    os.kill(os.getpid(), signal.SIGKILL)
elif how == "abort":
    os.abort()
"""

EXIT_CODES = {"exit": 0, "os._exit": 0, "SIGKILL": -9, "abort": -6}


@pytest.mark.skipif(not LINUX, reason="abstract Unix sockets are Linux's")
@pytest.mark.parametrize("how", list(EXIT_CODES))
def test_nothing_left_behind(tmp_path: Path, how: str) -> None:
    """However the top process ends, its listener leaves no file and no socket name."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    outcome = run_script(tmp_path, EXIT_WAYS, how, "abstract", env={"TMPDIR": str(tmp)})
    assert outcome.returncode == EXIT_CODES[how], outcome.stderr
    facts = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert facts["address"].startswith("@forksafe-logging-%d-" % facts["pid"])
    assert facts["listed"] is True
    assert (tmp_path / "out.log").read_text().endswith("from a child\n")
    assert list(tmp.iterdir()) == []
    # The kernel drops the name with the socket's last descriptor: the
    # process is reaped, and its forked child closed its copy at the fork.
    assert facts["address"] not in unix_names()


def test_socket_directories_of_dead_listeners_are_swept(tmp_path: Path, short_tmp: Path) -> None:
    """Where sockets are files: the next listener removes what a killed one left."""
    tmp = short_tmp
    env = {"TMPDIR": str(tmp)}
    killed = run_script(tmp_path, EXIT_WAYS, "SIGKILL", "files", env=env)
    assert killed.returncode == -9, killed.stderr
    pid = json.loads(killed.stdout.strip().splitlines()[-1])["pid"]
    left = [p.name for p in tmp.iterdir()]
    assert len(left) == 1
    assert left[0].startswith("forksafe-logging-%d-" % pid)
    # A live owner's directory is not touched, nor another user's.
    kept = [tmp / ("forksafe-logging-%d-0000" % os.getpid())]
    kept[0].mkdir(mode=0o700)
    if os.geteuid() == 0:
        kept.append(tmp / ("forksafe-logging-%d-0000" % pid))  # its owner is dead
        kept[1].mkdir(mode=0o700)
        os.chown(kept[1], 65534, 65534)
    later = run_script(tmp_path, EXIT_WAYS, "exit", "files", env=env)
    assert later.returncode == 0, later.stderr
    assert sorted(p.name for p in tmp.iterdir()) == sorted(p.name for p in kept)


HOSTILE = """
import json, logging, os, socket, struct, sys

# Another user binds the name a tree's children would connect to (as it could
# once the top has died: /proc/net/unix lists the names).
name = "\\0forksafe-logging-1-" + os.urandom(8).hex()
ready_r, ready_w = os.pipe()
got_r, got_w = os.pipe()
pid = os.fork()
if pid == 0:
    if sys.argv[1] == "other user":
        os.setgid(65534)
        os.setuid(65534)
    server = socket.socket(socket.AF_UNIX)
    server.bind(name)
    server.listen(1)
    os.write(ready_w, b"x")
    conn, _ = server.accept()
    got = b""
    try:
        conn.settimeout(20)
        if sys.argv[1].startswith("same user"):
            # The sender's hello (its nonce and MAC); then a proof made
            # without the key, which the sender must not accept.
            while len(got) < 64:
                got += conn.recv(64 - len(got))
            if sys.argv[1] == "same user":
                conn.sendall(os.urandom(32))
            else:
                # ...with two descriptors, as a listener's ring comes: not
                # of a ring's size, and one more than a listener sends.
                fd = os.memfd_create("hostile-ring")
                fds = struct.pack("ii", fd, fd)
                conn.sendmsg([os.urandom(32)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            got = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass  # the sender hung up first
    os.write(got_w, str(len(got)).encode())
    os._exit(0)
os.read(ready_r, 1)
os.environ["FORKSAFE_LOGGING_LISTENER"] = "%d:%s:@%s" % (pid, "ab" * 32, name[1:])

import forksafe_logging
from scenario_lib import mapped_here, report

forksafe_logging.attach()
logging.getLogger("victim").warning("the secret")
os.close(got_w)
received = int(os.read(got_r, 64) or b"-1")
os.waitpid(pid, 0)
# The hostile descriptors, or a mapping of them, left in the sender.
report(received=received, kept=sum(mapped_here("hostile-ring")))
"""


@pytest.mark.skipif(not LINUX, reason="abstract Unix sockets are Linux's")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run the hostile listener as nobody")
def test_listener_of_another_user_is_refused(tmp_path: Path) -> None:
    """A sender sends nothing, not even its hello, to another user's listener."""
    outcome = run_script(tmp_path, HOSTILE, "other user", env={})
    assert outcome.returncode == 0, outcome.stderr
    assert json.loads(outcome.stdout.strip().splitlines()[-1]) == {"received": 0, "kept": 0}
    # Not lost: written where a sender writes when it cannot reach the listener.
    assert "belongs to uid 65534" in outcome.stderr
    assert "the secret" in outcome.stderr


@pytest.mark.skipif(not LINUX, reason="abstract Unix sockets are Linux's")
@pytest.mark.parametrize("answer", ["same user", "same user, with descriptors"])
def test_listener_without_the_key_is_refused(tmp_path: Path, answer: str) -> None:
    """A sender sends no record to a listener that cannot prove it holds the tree's key.

    Nor keeps, nor maps, what such a listener sent with its answer.
    """
    outcome = run_script(tmp_path, HOSTILE, answer, env={})
    assert outcome.returncode == 0, outcome.stderr
    assert json.loads(outcome.stdout.strip().splitlines()[-1]) == {"received": 0, "kept": 0}
    assert "could not prove it holds the tree's key" in outcome.stderr
    assert "the secret" in outcome.stderr


LEAKS = """
import json, logging, os, select, socket, sys, threading
import forksafe_logging
from scenario_lib import report

logging.basicConfig(filename="out.log", level=logging.INFO)
forksafe_logging.install()
ADDRESS = forksafe_logging.QueueListener().address
FORKS = int(sys.argv[2])


def name(address):
    return address.decode("utf-8", "replace") if isinstance(address, bytes) else address


def sock_name(sock):
    return name(sock.getsockname())


def peer_name(sock):
    return name(sock.getpeername())


def held():
    # On the accept side, the listener's end of a connection (its local name
    # is the listener's address; the test's own connecting sockets have it as
    # their peer name). On the connect side, a connection to the listener.
    side = sock_name if sys.argv[1] == "accept" else peer_name
    found = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=int(entry))
        except OSError:
            continue
        try:
            if sock.family == socket.AF_UNIX and side(sock) == ADDRESS:
                found += 1
        except OSError:
            pass
        finally:
            sock.detach()
    return found


def fork_and_count(before_fork=lambda: None):
    r, w = os.pipe()
    before_fork()
    pid = os.fork()
    if pid == 0:
        os.write(w, str(held()).encode())
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 10)
    count = int(os.read(r, 64) or b"-1") if ready else -1
    os.close(r)
    os.waitpid(pid, 0)
    return count


def churn(stop):
    # Connections the listener accepts while the main thread forks.
    while not stop.is_set():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(ADDRESS)
        except OSError:
            pass
        sock.close()


def first_record_while_forking():
    # In a child of the top: its first record connects to the listener in
    # one thread while the main thread forks a grandchild.
    thread = threading.Thread(target=logging.warning, args=("first",))
    count = fork_and_count(thread.start)
    thread.join(10)
    return count


if sys.argv[1] == "accept":
    stop = threading.Event()
    threads = [threading.Thread(target=churn, args=(stop,)) for _ in range(2)]
    for t in threads:
        t.start()
    counts = [fork_and_count() for _ in range(FORKS)]
    stop.set()
    for t in threads:
        t.join(10)
else:
    counts = []
    for _ in range(FORKS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, str(first_record_while_forking()).encode())
            os._exit(0)
        os.close(w)
        ready, _, _ = select.select([r], [], [], 20)
        counts.append(int(os.read(r, 64) or b"-1") if ready else -1)
        os.close(r)
        os.waitpid(pid, 0)
report(counts=counts)
"""


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/fd")
@pytest.mark.parametrize("side", ["accept", "connect"])
def test_no_child_inherits_a_connection(tmp_path: Path, side: str) -> None:
    """A fork while a connection is being made never gives the child a copy of it.

    A child holding the listener's end of a sibling's connection (or a copy
    of its parent's own connection) keeps that connection open after its
    owner dies: the other end never learns, and waits.
    """
    forks = 300 if side == "accept" else 100
    outcome = run_script(tmp_path, LEAKS, side, str(forks), env={})
    counts = outcome.facts["counts"]
    assert len(counts) == forks
    assert -1 not in counts  # every child answered
    assert sum(1 for c in counts if c) == 0, counts


STRANGERS = """
import json, logging, os, resource, socket, sys, threading, time
import forksafe_logging
from forksafe_logging import _endpoint, _inbox
from scenario_lib import child, report

_inbox.HANDSHAKE_TIMEOUT = float(sys.argv[2])
logging.basicConfig(filename="out.log", level=logging.INFO, format="%(message)s")
forksafe_logging.install()
listener = forksafe_logging.QueueListener()
ADDRESS = listener.address


def idle(count):
    # Connections that never send their hello.
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(ADDRESS)
        sock.settimeout(30)
        socks.append(sock)
    return socks


def closed_by_listener(sock):
    # Nothing, then EOF once the listener gives up on it.
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data == b""
        data += chunk


def first_record():
    assert child(lambda: logging.info("from a child")) == "ok"
    assert forksafe_logging.flush(10)
    with open("out.log") as f:
        return f.read().splitlines().count("from a child")


how = sys.argv[1]
if how == "idle":
    socks = idle(3)
    closed = [closed_by_listener(s) for s in socks]
    report(closed=closed, arrived=first_record(), stats=listener.stats())
elif how == "many":
    socks = idle(200)
    arrived = first_record()  # while 200 strangers wait
    report(arrived=arrived, stats=listener.stats())
else:  # out of descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opened = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (opened + 40, hard))
    socks = []
    try:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            sock.connect(ADDRESS)
    except OSError:
        pass  # this process (listener included) has run out of descriptors
    # A window to measure a rate in, not a wait for something to happen.
    started = time.monotonic()
    time.sleep(1.0)
    errors = listener.stats()["accept_errors"]
    rate = errors / (time.monotonic() - started)
    for sock in socks:
        sock.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    report(errors=errors, rate=rate, arrived=first_record())
"""


@pytest.mark.skipif(not LINUX, reason="abstract sockets, /proc")
def test_idle_strangers_are_closed(tmp_path: Path) -> None:
    """A connection that never sends its hello is closed after the handshake timeout."""
    facts = run_script(tmp_path, STRANGERS, "idle", "0.5", env={}).facts
    assert facts["closed"] == [True, True, True]
    assert facts["stats"]["handshake_timeouts"] == 3
    assert facts["arrived"] == 1


@pytest.mark.skipif(not LINUX, reason="abstract sockets, /proc")
def test_waiting_strangers_are_capped(tmp_path: Path) -> None:
    """Strangers beyond the cap are closed, counted, and a child's record still arrives."""
    facts = run_script(tmp_path, STRANGERS, "many", "30", env={}).facts
    assert facts["arrived"] == 1
    # The child's connection came 201st, when 64 were waiting already.
    assert facts["stats"]["handshakes_refused"] == 201 - 64
    assert facts["stats"]["handshake_timeouts"] == 0


@pytest.mark.skipif(not LINUX, reason="abstract sockets, /proc")
def test_out_of_descriptors_pauses_accepting(tmp_path: Path) -> None:
    """With no descriptor left, the listener pauses instead of spinning, then recovers."""
    facts = run_script(tmp_path, STRANGERS, "emfile", "30", env={}).facts
    assert facts["errors"] >= 1
    # At most one failed accept() per 0.1 s pause (spinning made thousands).
    assert facts["rate"] < 15
    assert facts["arrived"] == 1


WHERE = """
import logging, os
import forksafe_logging
from forksafe_logging import _endpoint, _inbox
from scenario_lib import report

_endpoint.ABSTRACT = False  # the socket file of systems without abstract sockets
forksafe_logging.install()
report(address=forksafe_logging.QueueListener().address)
"""


@pytest.mark.parametrize(("mode", "used"), [(0o777, False), (0o1777, True), (0o755, True)])
def test_socket_directory_only_where_safe(
    short_tmp: Path, tmp_path: Path, mode: int, used: bool
) -> None:
    """A place anyone may write to without the sticky bit is not used for the socket."""
    short_tmp.chmod(mode)
    facts = run_script(tmp_path, WHERE, env={"TMPDIR": str(short_tmp)}).facts
    assert facts["address"].startswith(str(short_tmp) + "/") is used


class TestListenerSocket:
    def test_long_tmpdir(self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """Where sockets are files: a TMPDIR too long for a socket path falls back to /tmp."""
        from forksafe_logging import _endpoint

        long_dir = tmp_path / ("d" * 100)
        long_dir.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(long_dir))
        monkeypatch.setattr(_endpoint, "ABSTRACT", False)
        listener = forksafe_logging.QueueListener()
        assert os.path.dirname(os.path.dirname(listener.address)) == "/tmp"
        assert os.stat(os.path.dirname(listener.address)).st_mode & 0o777 == 0o700
