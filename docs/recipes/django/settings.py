"""settings.py of a Django project served by gunicorn (the parts that matter here)."""

SECRET_KEY = "change me"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS: list = []
MIDDLEWARE: list = []
DATABASES: dict = {}

# As usual: nothing here names forksafe_logging. With gunicorn's
# --preload, the master applies it, and the workers send to the master.
LOGGING = {
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
        # Django's request errors, and gunicorn's own loggers, to the same file.
        "django": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
    },
}
