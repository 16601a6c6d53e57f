"""One JSON-lines logging config for every MLflow process, mounted from a ConfigMap.

Cloud Logging reads `severity` and `message` from JSON lines; the access log carries method,
path and status, never headers, so no Authorization value can reach a log.
"""

from __future__ import annotations

import json

LOGGING_DIR = "/etc/mlflow-logging"
LOGGING_FILE = "logging.json"
LOGGING_PATH = f"{LOGGING_DIR}/{LOGGING_FILE}"
_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "mlflow", "gunicorn", "alembic")


def logging_config() -> dict:
    """A logging.config.dictConfig document (what uvicorn's --log-config accepts as JSON)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "severity", "asctime": "time", "name": "logger"},
        }},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": "INFO", "handlers": ["stdout"]},
        "loggers": {name: {"level": "INFO", "handlers": ["stdout"], "propagate": False} for name in _LOGGERS},
    }


def logging_config_json() -> str:
    return json.dumps(logging_config(), indent=2, sort_keys=True) + "\n"


def logging_volume(config_map_name) -> dict:
    return {"name": "logging", "configMap": {"name": config_map_name, "defaultMode": 0o444}}


def logging_mount() -> dict:
    return {"name": "logging", "mountPath": LOGGING_DIR, "readOnly": True}
