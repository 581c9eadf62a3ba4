"""End to end: uWSGI with a master and two worker processes, serving an app that logs.

uWSGI forks its workers from C. It runs Python's at-fork hooks in a worker
only when told to: ``py-call-osafterfork`` runs the child-side hooks,
``py-call-uwsgi-fork-hooks`` (with ``enable-threads``) runs all of them. The
app module, which the master loads before it forks, configures logging and
calls ``install()``; the master is the top of the tree. Workers are replaced
every 50 requests, and 400 requests come from 4 client threads over a Unix
socket. A handler of the master stamps the pid of the process that writes
each line: with either option every request's record is written by the
master, once. Without either, no hook runs in a worker, and the workers write
through the handlers they inherited: the library is not in effect there,
which the last test shows.

uWSGI is compiled when pip installs it (about 20 s per Python), so
scripts/test-all-pythons.sh installs it for the versions in
FORKSAFE_UWSGI_PYTHONS only; elsewhere these tests skip.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from conftest import PACKAGE_HOME

pytestmark = pytest.mark.timeout(150)

REQUESTS = 400
CLIENTS = 4
MAX_REQUESTS = 50

APP = """
import logging, os, threading
import forksafe_logging


def stamp(record):
    record.writer = os.getpid()
    return True


handler = logging.FileHandler("top.log")
handler.addFilter(stamp)
handler.setFormatter(logging.Formatter("%(writer)d|%(process)d|%(name)s|%(message)s"))
logging.root.addHandler(handler)
logging.root.setLevel(logging.INFO)
forksafe_logging.install()
log = logging.getLogger("app")

if os.environ.get("BUSY_MASTER_THREAD"):
    def busy():
        # Logs through the same handler, and holds the GIL most of the time.
        busy_log = logging.getLogger("busy")
        while True:
            busy_log.info("busy")
            for _ in range(20000):
                pass

    threading.Thread(target=busy, daemon=True).start()


def application(environ, start_response):
    log.info("request %s", environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % os.getpid()]
"""

#: The tested configuration; {fork_option} is the line under test.
INI = """
[uwsgi]
master = true
processes = 2
http-socket = {socket}
wsgi-file = app.py
need-app = true
enable-threads = true
{fork_option}
die-on-term = true
disable-logging = true
; Replace workers often, and at once, so that the test sees many.
max-requests = {max_requests}
min-worker-lifetime = 0
forkbomb-delay = 0
"""


def _uwsgi() -> Path:
    path = Path(sys.executable).parent / "uwsgi"
    if not path.exists():
        pytest.skip(
            "uWSGI is not installed for this Python: scripts/test-all-pythons.sh compiles it "
            "only for the versions in FORKSAFE_UWSGI_PYTHONS (about 20 s each), or it failed "
            "to build (see the install output)"
        )
    return path


def _get(address: str, n: int) -> int:
    """One request; the pid of the worker that answered."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)  # a worker that hangs fails the test
        sock.connect(address)
        sock.sendall(b"GET /?%d HTTP/1.0\r\nHost: test\r\n\r\n" % n)
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), response
    return int(body)


def _drive(address: str) -> Tuple[List[int], List[BaseException]]:
    pids: List[int] = []
    errors: List[BaseException] = []

    def client(first: int) -> None:
        try:
            for n in range(first, REQUESTS, CLIENTS):
                pids.append(_get(address, n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return pids, errors


def _wait_until_serving(address: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(address)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("uWSGI did not start serving within 30 s")


def _requests_logged(path: Path) -> List[List[str]]:
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    fields = [line.rstrip("\n").split("|", 3) for line in lines if line.endswith("\n")]
    return [f for f in fields if f[2] == "app"]


def serve(
    tmp_path: Path,
    fork_option: str,
    env_extra: Optional[Dict[str, str]] = None,
    clean_stop: bool = True,
) -> Dict[str, object]:
    """Run uWSGI, drive the requests, stop it; what the master's log file holds."""
    uwsgi = _uwsgi()
    address = str(tmp_path / "http.sock")
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "uwsgi.ini").write_text(
        INI.format(socket=address, fork_option=fork_option, max_requests=MAX_REQUESTS)
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_HOME), **(env_extra or {}))
    output = (tmp_path / "uwsgi.out").open("wb")
    server = subprocess.Popen(
        [str(uwsgi), "--ini", "uwsgi.ini"],
        cwd=tmp_path,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_until_serving(address, server)
        pids, errors = _drive(address)
        # Every request's record was sent before its response: wait until
        # the master has written them all, then stop it (see the recipe on
        # why waiting matters: uWSGI's master never runs Python's atexit).
        log = tmp_path / "top.log"
        deadline = time.monotonic() + 30
        while len(_requests_logged(log)) < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30 if clean_stop else 10)
        except subprocess.TimeoutExpired:
            if clean_stop:
                raise
            # Killed below; what the control looks at was written already.
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        output.close()
    records = _requests_logged(tmp_path / "top.log")
    return {
        "master": server.pid,
        "exit": server.returncode,
        "errors": [repr(e) for e in errors],
        "served_by": set(pids),
        "writers": {int(r[0]) for r in records},
        "logged_by": {int(r[1]) for r in records},
        "counts": collections.Counter(r[3] for r in records),
        "output": (tmp_path / "uwsgi.out").read_text(errors="replace")[-3000:],
    }


EXPECTED = {"request %d" % n: 1 for n in range(REQUESTS)}


@pytest.mark.parametrize(
    "fork_option",
    ["py-call-osafterfork = true", "py-call-uwsgi-fork-hooks = true"],
)
def test_workers_forward_to_the_master(tmp_path: Path, fork_option: str) -> None:
    """With either option every request's record is written once, by the master."""
    if fork_option.startswith("py-call-osafterfork") and sys.version_info >= (3, 13):
        pytest.skip(
            "uWSGI (2.0.31) with py-call-osafterfork kills every worker on Python 3.13 and "
            "later (this is %d.%d), with or without this library: 'Fatal Python error: "
            "_PyRecursiveMutex_Unlock' (it runs PyOS_AfterFork_Child without PyOS_BeforeFork)"
            % sys.version_info[:2]
        )
    facts = serve(tmp_path, fork_option)
    assert facts["errors"] == [], facts["output"]
    assert facts["exit"] == 0, facts["output"]
    assert facts["counts"] == EXPECTED
    assert facts["writers"] == {facts["master"]}
    assert facts["logged_by"] == facts["served_by"]
    assert facts["master"] not in facts["served_by"]
    # Workers were replaced every MAX_REQUESTS requests, and each new one joined.
    assert len(facts["served_by"]) >= REQUESTS // MAX_REQUESTS


def test_busy_master_thread_with_fork_hooks(tmp_path: Path) -> None:
    """A master thread logging in a loop: with the fork hooks, new workers still serve and log.

    Each fork may catch that thread inside the handler. (With
    ``py-call-osafterfork`` alone, uWSGI's own code hangs such a worker
    before any Python hook runs: it waits for the GIL, which the thread held
    at the fork. The recipe says so; it is not tested here.)
    """
    facts = serve(tmp_path, "py-call-uwsgi-fork-hooks = true", {"BUSY_MASTER_THREAD": "1"})
    assert facts["errors"] == [], facts["output"]
    assert facts["exit"] == 0, facts["output"]
    assert facts["counts"] == EXPECTED
    assert facts["writers"] == {facts["master"]}
    assert len(facts["served_by"]) >= REQUESTS // MAX_REQUESTS


def test_without_a_fork_option_workers_write_themselves(tmp_path: Path) -> None:
    """Neither option: no hook runs in a worker, which writes through the inherited handler.

    The records still land once here, because nothing else was writing at
    the forks; but the workers are not in the tree, and nothing repaired what
    they inherited. This is why the recipe requires one of the options.

    Such a worker may also fail to stop on SIGTERM (seen once in many runs on
    3.13: a worker never exited; the helper that wrote these tests saw the
    same misconfiguration stall workers with any Python thread in the
    master, with or without this library), so this control does not require
    a clean stop: its records were all written before the stop.
    """
    facts = serve(tmp_path, "", clean_stop=False)
    assert facts["errors"] == [], facts["output"]
    assert facts["counts"] == EXPECTED
    assert facts["writers"] == facts["served_by"]
    assert facts["master"] not in facts["writers"]
