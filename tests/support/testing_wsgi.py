"""The real app plus routes that only tests need: ones that fail, and one that is slow.

Served by the real Gunicorn in tests: `tests.support.testing_wsgi:app`.
"""

import os
import time

from flask import request, session
from sqlalchemy import select, text

from app import create_app
from app.api import idempotency
from app.extensions import db
from app.models import User

app = create_app()


@app.get("/_test/error")
def fail():
    raise RuntimeError("deliberate failure for tests")


@app.post("/_test/error-with-user-data")
def fail_with_user_data():
    """Fails the way a signed-in write can: after reading its session from Redis, looking its
    user up by email and its Idempotency-Key up in Postgres; `?in=sql` fails in a statement
    that carries the email. Sentry must be sent none of it."""
    user_id = session["user_id"]
    email = db.session.scalar(select(User.email).where(User.id == user_id))
    idempotency.earlier_answer(user_id, idempotency.requested_key(), "-")
    if request.args.get("in") == "sql":
        db.session.execute(text("SELECT 1 / 0 FROM users WHERE email = :email"), {"email": email})
    db.session.scalar(select(User.id).where(User.email == email))
    raise RuntimeError("deliberate failure for tests")


@app.get("/_test/slow-query")
def slow_query():
    seconds = float(request.args.get("seconds", "2"))
    db.session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    return {"slept": seconds}


@app.post("/_test/hold-the-loop")
def hold_the_loop():
    """Blocks the worker's whole event loop, as CPU-bound work does, until the file named in the
    body exists (10 s at most); `marker` is created first, to say the loop is held."""
    paths = request.get_json()
    open(paths["marker"], "w").close()
    deadline = time.monotonic() + 10
    while not os.path.exists(paths["until"]) and time.monotonic() < deadline:
        pass  # no yield to gevent: nothing else in this worker runs
    return {"held": True}
