"""The one JSON log record shape, shared by the app's logs and Gunicorn's.

A leaf module: Gunicorn's master imports it (gunicorn.conf.py) before any worker exists, so it
imports nothing from the app and nothing that opens sockets.
"""

from pythonjsonlogger.json import JsonFormatter

JSON_FORMAT = "%(levelname)s %(name)s %(message)s"
JSON_RENAMES = {"levelname": "level", "name": "logger"}


def json_formatter() -> JsonFormatter:
    """UTC ISO-8601 `timestamp`, `level`, `logger`, `message`, plus any `extra` fields."""
    return JsonFormatter(JSON_FORMAT, rename_fields=JSON_RENAMES, timestamp=True)
