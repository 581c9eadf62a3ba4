"""gunicorn.conf.py: forksafe_logging in gunicorn's master process.

gunicorn reads this file in the master, and each worker it forks inherits
the logging set up here: the master writes every record, the workers' too.
"""

import forksafe_logging

# One handler, in the master, for everything: the application's records and
# gunicorn's own, from the master and from every worker.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "app.log", "formatter": "line"},
    },
    "root": {"level": "INFO", "handlers": ["file"]},
    "loggers": {
        # gunicorn gives its two loggers handlers of their own and keeps them
        # from propagating; here they propagate to the root's handler instead.
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
    },
}


def on_starting(server):
    # In the master, once, before it forks the first worker.
    forksafe_logging.install()
