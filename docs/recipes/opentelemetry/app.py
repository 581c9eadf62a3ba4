"""One OpenTelemetry exporter for a whole process tree.

The top process configures the OpenTelemetry SDK: one LoggerProvider, one
BatchLogRecordProcessor, one OTLP/HTTP exporter, behind the SDK's
LoggingHandler on the root logger. install() routes the records of every
worker to that handler, whatever the start method, so the workers
configure nothing and never open a connection to the collector.

Run: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://collector:4318/v1/logs python app.py
(a start method as argument: fork, spawn or forkserver; the default is
the platform's).
"""

import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

import forksafe_logging

log = logging.getLogger("orders")


class ProcessAttributes(logging.Filter):
    """Name the process that logged each record.

    The provider's resource describes the process that exports, the top
    one; the pid of the worker that logged travels with its record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__["process.pid"] = record.process
        record.__dict__["process.name"] = record.processName
        return True


def handle(order: int) -> int:
    # What a worker wants on its records goes in `extra`: it crosses to the
    # top with the record and becomes an attribute there.
    time.sleep(0.005)  # the work
    log.info("order %d shipped", order, extra={"order.id": order})
    return os.getpid()


def main() -> None:
    method = sys.argv[1] if len(sys.argv) > 1 else None
    orders = int(sys.argv[2]) if len(sys.argv) > 2 else 100

    provider = LoggerProvider(resource=Resource.create({"service.name": "orders"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    handler = LoggingHandler(logger_provider=provider)
    handler.addFilter(ProcessAttributes())
    root = logging.getLogger()  # not basicConfig(): its formatter would be the body
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    forksafe_logging.install()

    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        for order, pid in enumerate(pool.map(handle, range(orders))):
            print(order, pid)  # which worker handled which order

    # Every worker's record handed to the handler, then exported. (At exit
    # this happens by itself, in this order, if the provider was made
    # before install(): atexit runs the listener's stop first.)
    forksafe_logging.flush()
    provider.shutdown()


if __name__ == "__main__":
    main()
