"""End to end: a Django project's ``LOGGING`` under a real gunicorn with three workers.

The project is the recipe's (docs/recipes/django/): its settings, with the
stamp of the process that writes each line added to the file handler, and
gunicorn's configuration file, which preloads the project in the master and
calls ``install()`` there. A view logs one record per request. The test
sends requests, stops gunicorn, and reads the log file: every request's
record is in it exactly once, naming the worker that served it, and every
line was written by the master.

That every worker serves and logs is made certain, not left to the
kernel's choice of which worker accepts: the first ``WORKERS`` requests
each hold their worker at a gate (``through_the_gate``), so each is served
by a different worker. Sequential requests alone were all served by one
worker in a CI run.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Set

import pytest
from conftest import PACKAGE_HOME, TESTS
from test_e2e_uvicorn import GATE_CLIENT, answers, gate_socket, get, through_the_gate, wait_for

pytestmark = pytest.mark.timeout(150)

RECIPE = TESTS.parent / "docs" / "recipes" / "django"
WORKERS = 3
REQUESTS = 150

URLS = (
    GATE_CLIENT
    + """\
import logging
import os

from django.http import HttpResponse
from django.urls import path

log = logging.getLogger("mysite.views")


def serve(request, request_id):
    log.info("request %s", request_id)
    if request_id.startswith("gate"):
        wait_at_gate()
    return HttpResponse(b"%d" % os.getpid(), content_type="text/plain")


urlpatterns = [path("<str:request_id>", serve)]
"""
)

WSGI = """\
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
"""

STAMP = """\
import logging
import os


class Stamp(logging.Filter):
    # Which process writes the line: the master, always.
    def filter(self, record):
        record.writer = os.getpid()
        return True
"""


def _django_runs() -> str:
    """Why Django cannot run here, or ``""``."""
    probe = subprocess.run(
        [sys.executable, "-c", "import django, gunicorn; print(django.get_version())"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return (probe.stderr.strip().splitlines() or ["exit %d" % probe.returncode])[-1]
    return ""


def _project(tmp_path: Path) -> None:
    site = tmp_path / "mysite"
    site.mkdir()
    (site / "__init__.py").write_text("")
    settings = (RECIPE / "settings.py").read_text()
    # The recipe's settings, plus the stamp of the process that writes each line.
    settings += textwrap.dedent(
        """
        LOGGING["filters"] = {"stamp": {"()": "mysite.stamp.Stamp"}}
        LOGGING["handlers"]["file"]["filters"] = ["stamp"]
        LOGGING["formatters"]["line"]["format"] = "%(writer)d|%(process)d|%(name)s|%(message)s"
        """
    )
    (site / "settings.py").write_text(settings)
    (site / "urls.py").write_text(URLS)
    (site / "wsgi.py").write_text(WSGI)
    (site / "stamp.py").write_text(STAMP)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_django_logging_under_gunicorn(tmp_path: Path) -> None:
    """Every request of every worker once in the file, written by the master."""
    reason = _django_runs()
    if reason:
        pytest.skip(
            "Django or gunicorn cannot run on this Python (%s): pip install '.[e2e]'" % reason
        )
    _project(tmp_path)
    sock_path = str(tmp_path / "s")
    env = dict(os.environ)
    env.pop("FORKSAFE_LOGGING_LISTENER", None)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(PACKAGE_HOME)])
    env["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    env["GATE"] = str(tmp_path / "gate")
    gate = gate_socket(env["GATE"])
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(RECIPE / "gunicorn.conf.py"),
         "--workers", str(WORKERS), "--bind", "unix:" + sock_path, "mysite.wsgi"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    output = ""
    try:
        wait_for(lambda: answers(sock_path), 60, "gunicorn's first answer")
        served: Dict[str, int] = {}
        through_the_gate(gate, sock_path, served, WORKERS, "gate")
        for n in range(REQUESTS):
            served["r%d" % n] = get(sock_path, "r%d" % n)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            output = server.communicate(timeout=40)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            output = server.communicate()[0].decode(errors="replace")
            pytest.fail("gunicorn did not stop within 40 s:\n" + output)
        finally:
            gate.close()
    assert server.returncode == 0, output
    requests: collections.Counter[str] = collections.Counter()
    by_worker: Dict[str, int] = {}
    writers: Set[int] = set()
    for line in (tmp_path / "app.log").read_text().splitlines():
        writer, process, name, message = line.split("|", 3)
        writers.add(int(writer))
        if name == "mysite.views" and "probe" not in message:
            request_id = message.split()[1]
            requests[request_id] += 1
            by_worker[request_id] = int(process)
    assert writers == {server.pid}, output
    assert requests == dict.fromkeys(served, 1)
    assert by_worker == served
    gated = {served["gate%d" % n] for n in range(WORKERS)}
    assert len(gated) == WORKERS  # every worker served, and logged
