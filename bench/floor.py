"""The floor: what bare Flask costs under the kit's Gunicorn configuration, launcher and nginx.

`make bench` serves this app as a third configuration (`floor`) beside the seed's and ours. It
answers the authenticated read's route with a page of the same shape and size, built from memory
and serialized by Flask on every request: no Postgres, no Redis, no session, no middleware. What
ours costs above it is the kit's own work (bench/suite.py reports ours / floor).

    python -m gevent.monkey --module gunicorn --config gunicorn.conf.py bench.floor:app
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Flask, request

# the bench's signed-in user has this many notes, and reads the first page (20 a page)
NOTES = 20
WRITTEN = datetime(2026, 1, 1, tzinfo=timezone.utc)
PAGE_ITEMS = [
    {"id": n, "title": f"note {n}", "body": "x" * 200,
     "created_at": (WRITTEN + timedelta(seconds=n, microseconds=n)).isoformat(),
     "updated_at": (WRITTEN + timedelta(seconds=n, microseconds=n)).isoformat()}
    for n in range(NOTES, 0, -1)
]

app = Flask(__name__)


@app.get("/api/notes")
def notes():
    # a fresh dict each time: Flask serializes the page anew, as ours does
    return {"items": PAGE_ITEMS, "page": 1, "per_page": 20, "has_more": False}


@app.post("/api/notes")
def create_note():
    # the write's shape: the JSON body read and echoed as a stored note would be
    fields = request.get_json()
    return {**PAGE_ITEMS[0], "title": fields["title"], "body": fields.get("body", "")}, 201


@app.get("/health")
@app.get("/health/ready")
def health():
    return {"status": "ok"}
