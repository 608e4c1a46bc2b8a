"""The WSGI entry point: `python -m gevent.monkey --module gunicorn --config gunicorn.conf.py
wsgi:app` (gunicorn.conf.py says why), `flask --app wsgi ...`."""

import sys

from app import create_app
from app.config import APP_LOAD_ERROR, ConfigError

try:
    app = create_app()
except ConfigError as error:
    print(f"configuration error: {error}", file=sys.stderr)
    raise SystemExit(APP_LOAD_ERROR) from None
