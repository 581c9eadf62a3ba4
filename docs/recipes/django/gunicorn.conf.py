"""gunicorn.conf.py for a Django project: its LOGGING applied in the master, install() there."""

import forksafe_logging

# The master imports the project, and so applies settings.LOGGING, before
# it forks the workers; without it, each worker would apply LOGGING for
# itself, after its fork, and write the log file itself.
preload_app = True


def on_starting(server):
    # In the master, once, after the project is loaded and before the first fork.
    forksafe_logging.install()
