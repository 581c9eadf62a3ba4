"""structlog over the standard library: install() forwards the records, event dicts whole."""

import logging
import multiprocessing
import sys

import structlog

import forksafe_logging
from forksafe_logging.structlog import add_process_info

# At module level, so that spawn and forkserver children, which import this
# module, build the same chain.
structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        add_process_info,
        structlog.processors.format_exc_info,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)
log = structlog.get_logger("app")


def work(n: int) -> int:
    try:
        1 / n
    except ZeroDivisionError:
        log.exception("cannot divide", n=n)
    else:
        log.info("divided", n=n)
    return n


def main() -> None:
    # The top process's formatter receives every process's event dicts.
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
