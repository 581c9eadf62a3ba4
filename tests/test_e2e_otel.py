"""End to end: one OpenTelemetry exporter for a process tree, against a real OTLP/HTTP receiver.

The program is the recipe's (docs/recipes/opentelemetry/app.py): the top
process configures opentelemetry-sdk's LoggingHandler with a
BatchLogRecordProcessor and the OTLP/HTTP exporter, calls install(), and
four pool workers log. The receiver is an HTTP server in this process that
decodes each request with opentelemetry-proto, and notes which connection
brought it. Every worker's record arrives once, with the pid of the process
that logged it and the attributes the worker gave it, in batches that one
connection carried. The recipe's comparison, an exporter in every worker,
runs against the same receiver: it opens a connection per worker.
"""

from __future__ import annotations

import collections
import gzip
import http.server
import os
import subprocess
import sys
import threading
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from conftest import PACKAGE_HOME, TESTS

pytestmark = pytest.mark.timeout(120)

RECIPE = TESTS.parent / "docs" / "recipes" / "opentelemetry"
ORDERS = 200

try:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
except ImportError as exc:  # the e2e extra is not installed, or not on this Python
    pytest.skip(
        "opentelemetry-proto is not importable (%s): pip install '.[e2e]'" % exc,
        allow_module_level=True,
    )


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


class Exported:
    """What the receiver was sent: each record, with its batch and connection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: List[Dict[str, Any]] = []
        self.batches = 0
        self.connections: set[Tuple[str, int]] = set()

    def add(self, client: Tuple[str, int], body: bytes) -> None:
        request = logs_service_pb2.ExportLogsServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            self.batches += 1
            self.connections.add(client)
            for resource_logs in request.resource_logs:
                resource = {a.key: _value(a.value) for a in resource_logs.resource.attributes}
                for scope_logs in resource_logs.scope_logs:
                    for entry in scope_logs.log_records:
                        self.records.append(
                            {
                                "body": _value(entry.body),
                                "attributes": {a.key: _value(a.value) for a in entry.attributes},
                                "resource": resource,
                            }
                        )


class _Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a connection is a client port

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.exported.add(self.client_address, body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # not on the test's stderr


@pytest.fixture
def receiver() -> Iterator[Tuple[str, Exported]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    exported = Exported()
    server.exported = exported  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d/v1/logs" % server.server_address[1], exported
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _run(script: str, method: str, endpoint: str) -> Dict[int, int]:
    """Run a recipe program; which worker's pid handled each order."""
    env = dict(os.environ)
    env.pop("FORKSAFE_LOGGING_LISTENER", None)
    env["PYTHONPATH"] = str(PACKAGE_HOME)
    env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] = endpoint
    env["OTEL_BLRP_SCHEDULE_DELAY"] = "200"  # ms: batches sent while the pool runs too
    done = subprocess.run(
        [sys.executable, str(RECIPE / script), method, str(ORDERS)],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    handled = {}
    for line in done.stdout.splitlines():
        order, pid = line.split()
        handled[int(order)] = int(pid)
    assert sorted(handled) == list(range(ORDERS)), done.stdout + done.stderr
    return handled


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_one_exporter_for_the_tree(receiver: Tuple[str, Exported], method: str) -> None:
    """Every worker's record exported once, by the top, naming the worker."""
    endpoint, exported = receiver
    handled = _run("app.py", method, endpoint)
    shipped = [r for r in exported.records if "order.id" in r["attributes"]]
    orders = collections.Counter(r["attributes"]["order.id"] for r in shipped)
    assert orders == dict.fromkeys(range(ORDERS), 1)
    for record in shipped:
        order = record["attributes"]["order.id"]
        assert record["body"] == "order %d shipped" % order
        assert record["attributes"]["process.pid"] == handled[order]
        assert record["attributes"]["process.name"] != "MainProcess"
        assert record["resource"]["service.name"] == "orders"
    assert len(set(handled.values())) > 1  # more than one worker logged
    assert len(exported.connections) == 1, exported.connections
    print("%s: %d batches, 1 connection" % (method, exported.batches))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_exporter_per_worker_for_comparison(receiver: Tuple[str, Exported], method: str) -> None:
    """The per-worker setup: every record too, over a connection per worker that logged.

    What the recipe's comparison says, with its finalizer (without it, a
    pool worker started by fork or forkserver exits without exporting its
    last batch).
    """
    endpoint, exported = receiver
    handled = _run("per_worker.py", method, endpoint)
    shipped = [r for r in exported.records if "order.id" in r["attributes"]]
    orders = collections.Counter(r["attributes"]["order.id"] for r in shipped)
    assert orders == dict.fromkeys(range(ORDERS), 1)
    workers = set(handled.values())
    print(
        "%s: %d batches, %d connections, %d workers"
        % (method, exported.batches, len(exported.connections), len(workers))
    )
    assert len(exported.connections) >= len(workers)
