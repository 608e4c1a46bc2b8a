"""The WSGI entry point: `python -m gevent.monkey --module gunicorn --config gunicorn.conf.py
wsgi:app` (gunicorn.conf.py says why), `flask --app wsgi ...`."""

import sys

from app import create_app
from app.config import ConfigError

# Gunicorn's exit code for "the app failed to load": the master stops instead of respawning
# workers that can never boot.
APP_LOAD_ERROR = 4

try:
    app = create_app()
except ConfigError as error:
    print(f"configuration error: {error}", file=sys.stderr)
    raise SystemExit(APP_LOAD_ERROR) from None
