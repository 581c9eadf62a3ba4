"""End to end: a real uvicorn with ``--workers 4``, configured by ``--log-config``.

uvicorn runs the recipe's configuration (docs/recipes/uvicorn.json) and an
ASGI app that logs one record per request. The supervisor starts its
workers with ``spawn``; each of them applies the same configuration, in
which the ``forksafe_logging.QueueHandler`` forwards to the supervisor.
The test sends requests, kills a worker (uvicorn starts another), sends
more, stops the server, and reads the log file: every request's record and
access line is in it exactly once, each line written by the supervisor
(lines start with the pid of the process that wrote them), and no worker
ever had the file open.

That the replacement serves (and logs) is made certain, not left to which
worker the kernel wakes: requests sent one after another each hold their
worker at a gate (:func:`through_the_gate`) until every worker holds one.
"""

from __future__ import annotations

import collections
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest
from conftest import PACKAGE_HOME, TESTS

pytestmark = pytest.mark.timeout(150)

RECIPE = TESTS.parent / "docs" / "recipes" / "uvicorn.json"
WORKERS = 4
#: Requests before the kill of a worker, and at least as many after.
REQUESTS = 200

#: Worker-side code of the gate (see :func:`through_the_gate`), for the apps.
GATE_CLIENT = """\
def wait_at_gate():
    # Hold this worker (its thread; an event loop with it) until the test opens the gate.
    import os, socket
    with socket.socket(socket.AF_UNIX) as gate:
        gate.settimeout(60)
        gate.connect(os.environ["GATE"])
        gate.sendall(b"%d\\n" % os.getpid())
        gate.recv(1)


"""

APP = (
    GATE_CLIENT
    + """\
import logging
import os

log = logging.getLogger("app")


class Stamp(logging.Filter):
    # Which process writes the line: the supervisor, always.
    def filter(self, record):
        record.writer = os.getpid()
        return True


async def app(scope, receive, send):
    assert scope["type"] == "http"
    log.info("request %s", scope["path"].lstrip("/"))
    if scope["path"].startswith("/gate"):
        wait_at_gate()  # blocks the worker's event loop: it accepts nothing meanwhile
    body = b"%d" % os.getpid()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""
)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def get(path: str, request_id: str) -> int:
    """One request; the pid of the worker that answered."""
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", "/" + request_id)
        response = conn.getresponse()
        assert response.status == 200
        return int(response.read())
    finally:
        conn.close()


def answers(path: str) -> bool:
    """Whether a worker serves (uvicorn's workers listen on the socket it made)."""
    try:
        get(path, "probe")
    except OSError:
        return False
    return True


def children(pid: int) -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def holds(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    try:
        entries = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for entry in entries:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, entry)) == str(path):
                return True
        except OSError:
            pass
    return False


def gate_socket(path: str) -> socket.socket:
    """The test's end of the gate, at ``path`` (the workers find it in ``$GATE``)."""
    gate = socket.socket(socket.AF_UNIX)
    gate.bind(path)
    gate.listen(16)
    gate.settimeout(60)
    return gate


def through_the_gate(
    gate: socket.socket, sock_path: str, served: Dict[str, int], workers: int, prefix: str
) -> None:
    """Send ``workers`` requests, each once the last is held by its worker, then open the gate.

    A held worker accepts no connection (a sync worker is inside the
    request; an asyncio worker's loop is blocked), so each request goes to a
    worker not yet held: when all are held, each of the ``workers`` workers
    has served one. A request that no free worker takes fails the test
    after 60 s, saying how many reached the gate.
    """
    errors: List[BaseException] = []

    def one(request_id: str) -> None:
        try:
            served[request_id] = get(sock_path, request_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    senders: List[threading.Thread] = []
    held: List[socket.socket] = []
    try:
        for n in range(workers):
            sender = threading.Thread(target=one, args=("%s%d" % (prefix, n),), daemon=True)
            sender.start()
            senders.append(sender)
            try:
                conn = gate.accept()[0]
            except socket.timeout:
                pytest.fail("%d of %d workers reached the gate within 60 s" % (n, workers))
            held.append(conn)
            conn.settimeout(30)
            conn.recv(64)  # the worker's pid: it is inside the request now
    finally:
        for conn in held:
            with conn:
                conn.sendall(b"!")
        for sender in senders:
            sender.join(60)
    assert not errors, errors
    assert not any(sender.is_alive() for sender in senders)


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("%s: not within %d s" % (what, timeout))
        time.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_uvicorn_workers(tmp_path: Path) -> None:
    """Every request of every worker (one of them replaced) once, written by the supervisor."""
    if importlib.util.find_spec("uvicorn") is None:
        pytest.skip("uvicorn is not installed (pip install forksafe_logging[e2e])")
    (tmp_path / "app.py").write_text(APP)
    config = json.loads(RECIPE.read_text())
    # The recipe's file, plus the stamp of the process that writes each line.
    config["filters"] = {"stamp": {"()": "app.Stamp"}}
    config["handlers"]["file"]["filters"] = ["stamp"]
    config["formatters"]["line"]["format"] = "%(writer)d|" + config["formatters"]["line"]["format"]
    (tmp_path / "log.json").write_text(json.dumps(config))
    sock_path = str(tmp_path / "s")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(PACKAGE_HOME)])
    env["GATE"] = str(tmp_path / "gate")
    gate = gate_socket(env["GATE"])
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--workers", str(WORKERS),
         "--uds", sock_path, "--log-config", "log.json", "--lifespan", "off",
         "--timeout-graceful-shutdown", "5"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    log_file = tmp_path / "app.log"
    output = ""
    try:
        wait_for(lambda: answers(sock_path), 60, "uvicorn's first answer")
        served: Dict[str, int] = {}
        for n in range(REQUESTS):
            served["a%d" % n] = get(sock_path, "a%d" % n)
        first_workers = set(served.values())
        workers = children(server.pid)
        opened = [pid for pid in workers if holds(pid, log_file)]
        victim = next(iter(first_workers))
        assert victim in workers
        os.kill(victim, signal.SIGKILL)
        # uvicorn starts a worker in its place; with every live worker held
        # at the gate in turn, the replacement serves one of those requests.
        through_the_gate(gate, sock_path, served, WORKERS, "gate")
        for n in range(REQUESTS):
            served["b%d" % n] = get(sock_path, "b%d" % n)
        opened += [pid for pid in children(server.pid) if holds(pid, log_file)]
        supervisor_holds = holds(server.pid, log_file)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            output = server.communicate(timeout=40)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            output = server.communicate()[0].decode(errors="replace")
            pytest.fail("uvicorn did not stop within 40 s:\n" + output)
        finally:
            gate.close()
    assert server.returncode == 0, output
    assert opened == [], "workers that opened the log file: %s" % opened
    assert supervisor_holds
    requests: collections.Counter[str] = collections.Counter()
    access: collections.Counter[str] = collections.Counter()
    writers: Set[int] = set()
    by_worker: Dict[str, Optional[int]] = {}
    for line in log_file.read_text().splitlines():
        writer, process, name, message = line.split("|", 3)
        if "probe" in message:
            continue  # the requests that waited for uvicorn to serve
        writers.add(int(writer))
        if name == "app":
            request_id = message.split()[1]
            requests[request_id] += 1
            by_worker[request_id] = int(process)
        elif name == "uvicorn.access":
            access[message.split('"GET /', 1)[1].split()[0]] += 1
    assert writers == {server.pid}
    assert requests == dict.fromkeys(served, 1)
    assert access == dict.fromkeys(served, 1)
    # Each record names the worker that served its request.
    assert by_worker == served
    gated = {served["gate%d" % n] for n in range(WORKERS)}
    assert len(gated) == WORKERS
    assert gated - set(workers)  # the replacement served too
