"""For comparison: an OpenTelemetry exporter in every worker.

What OpenTelemetry's documentation advises for servers that fork workers:
set the SDK up again in each worker after it starts (here in the pool's
initializer), so that no exporter thread or connection crosses a fork.
Each worker then has its own provider, batch processor and connection.
Without forksafe_logging.

Run: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://collector:4318/v1/logs python per_worker.py
"""

import logging
import multiprocessing
import multiprocessing.util
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

log = logging.getLogger("orders")


def set_up_exporter() -> None:
    root = logging.getLogger()
    for old in root.handlers[:]:  # a forked worker inherits the parent's
        root.removeHandler(old)
    provider = LoggerProvider(resource=Resource.create({"service.name": "orders"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    root.addHandler(LoggingHandler(logger_provider=provider))
    # A worker that multiprocessing forked ends with os._exit(): no atexit
    # hook runs there, the provider's own included, and the records of its
    # last batch would never be exported. Its finalizers do run.
    multiprocessing.util.Finalize(provider, provider.shutdown, exitpriority=10)
    root.setLevel(logging.INFO)


def handle(order: int) -> int:
    time.sleep(0.005)  # the work
    log.info("order %d shipped", order, extra={"order.id": order})
    return os.getpid()


def main() -> None:
    method = sys.argv[1] if len(sys.argv) > 1 else None
    orders = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    set_up_exporter()
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(4, mp_context=context, initializer=set_up_exporter) as pool:
        for order, pid in enumerate(pool.map(handle, range(orders))):
            print(order, pid)


if __name__ == "__main__":
    main()
