"""The floor with the read's two round trips: the least any authenticated read from Postgres and
a Redis session can cost under the kit's Gunicorn configuration, launcher and nginx.

`make bench` serves this app as `floor_trips`, for the authenticated read only, on the same user
and session as ours. Per request it does what ours must and nothing else: one redis-py GET of the
session record, one psycopg2 query of the page (ours' SQL, in autocommit, on a connection kept by
the worker), and the page's notes built by ours' note_json, serialized by Flask as the floor's
are. No SQLAlchemy, Flask-Session, schemas, middleware, deadlines, pool bounds or metrics. So
ours / floor_trips is what the kit's layers cost, and floor_trips / floor what the round trips
cost (in the kernel as much as in the drivers: on loopback, each send is delivered in the
sender's time).

    python -m gevent.monkey --module gunicorn --config gunicorn.conf.py bench.floor_trips:app
"""

from __future__ import annotations

import json
import os
import queue

import psycopg2
from flask import Flask, abort, request
from gevent.socket import wait_read, wait_write
from psycopg2 import extensions
from redis import Redis
from sqlalchemy.dialects.postgresql import psycopg2 as postgres_dialect

from app.api.notes import NOTE_PAGE
from app.api.schemas import note_json
from app.sessions import storage_key

PAGE_SQL = NOTE_PAGE.compile(dialect=postgres_dialect.dialect()).string
PER_PAGE = 20  # the bench reads the first page, as floor.py serves it


def wait(connection, timeout=None):
    """psycopg2's waits as gevent's: unbounded, as no floor needs a bound."""
    while (state := connection.poll()) != extensions.POLL_OK:
        (wait_read if state == extensions.POLL_READ else wait_write)(connection.fileno())


extensions.set_wait_callback(wait)
redis = Redis.from_url(os.environ["REDIS_URL"])
idle: queue.LifoQueue = queue.LifoQueue()  # this worker's connections, each opened when first needed


def connection():
    try:
        return idle.get_nowait()
    except queue.Empty:
        opened = psycopg2.connect(os.environ["DATABASE_URL"])
        opened.autocommit = True
        return opened


app = Flask(__name__)


@app.get("/api/notes")
def notes():
    sid = request.cookies.get("session")
    record = sid and redis.get(storage_key(sid))
    if not record:
        abort(401)
    # the record's plain JSON (app.sessions.RecordSerializer's tags add nothing to a user id)
    owner_id = json.loads(record)["data"]["user_id"]
    database = connection()
    try:
        with database.cursor() as cursor:
            cursor.execute(PAGE_SQL, {"owner_id": owner_id, "limit": PER_PAGE + 1, "offset": 0})
            rows = cursor.fetchall()
    except BaseException:
        database.close()  # never kept: it may be broken, or mid-answer
        raise
    idle.put(database)
    return {"items": [note_json(row) for row in rows[:PER_PAGE]], "page": 1, "per_page": PER_PAGE,
            "has_more": len(rows) > PER_PAGE}


@app.get("/health")
@app.get("/health/ready")
def health():
    return {"status": "ok"}
