"""The real app plus two routes that only tests need: one that fails and one that is slow.

Served by the real Gunicorn in tests: `tests.support.testing_wsgi:app`.
"""

from flask import request
from sqlalchemy import text

from app import create_app
from app.extensions import db

app = create_app()


@app.get("/_test/error")
def fail():
    raise RuntimeError("deliberate failure for tests")


@app.get("/_test/slow-query")
def slow_query():
    seconds = float(request.args.get("seconds", "2"))
    db.session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    return {"slept": seconds}
