"""structlog on its own: the events of every process reach the top process's handlers."""

import logging
import multiprocessing
import sys

import structlog

import forksafe_logging
from forksafe_logging.structlog import SendToListener, add_process_info

# At module level, so that spawn and forkserver children, which import this
# module, build the same chain.
structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        add_process_info,
        SendToListener(),  # last, in place of the renderer
    ],
    logger_factory=structlog.PrintLoggerFactory(),
    cache_logger_on_first_use=True,
)
log = structlog.get_logger()


def work(n: int) -> int:
    log.info("working", n=n)
    return n


def main() -> None:
    # Only the top process renders and writes, with the handlers set up here.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    forksafe_logging.install()

    method = sys.argv[1] if len(sys.argv) > 1 else "spawn"
    with multiprocessing.get_context(method).Pool(2) as pool:
        pool.map(work, range(4))
    log.info("done")


if __name__ == "__main__":
    main()
