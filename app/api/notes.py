"""Notes: CRUD and a paginated list, each note visible only to its owner."""

from __future__ import annotations

import functools
from typing import NamedTuple

from flask import current_app, session
from flask_smorest import abort
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from ..datastores import fetch_rows
from ..errors import require_json_body
from ..extensions import db, limiter
from ..models import Note
from . import idempotency
from .auth import current_user, current_user_id
from .parsing import Blueprint
from .schemas import (
    NOTE_FIELDS,
    RETRY_AFTER,
    ErrorResponseSchema,
    NotePageSchema,
    NoteSchema,
    NoteUpdateSchema,
    PageQuerySchema,
)

blp = Blueprint("notes", __name__, url_prefix="/api/notes", description="The current user's notes")
blp.before_request(require_json_body)

# Postgres `integer`: a larger id cannot exist, and must not reach the database as an overflow
NOTE_ID_MAX = 2**31 - 1
NOTE_PATH = "/<int:note_id>"
unauthenticated = blp.alt_response(401, schema=ErrorResponseSchema, description="Not logged in")
not_found = blp.alt_response(404, schema=ErrorResponseSchema, description="No such note, or not yours")

# A page of notes, built once and run on the driver's cursor: building the select on each
# request and running it through the ORM cost more than the query itself (0.59 ms of app CPU
# per call, against 0.23 ms as Core; the cursor is cheaper still, bench/changes.md). Plain
# rows, in NOTE_FIELDS' order: the page is only read and serialized. One row past the page says
# whether another follows: no COUNT(*), which reads every one of the user's rows on each page
# and costs a round trip of its own.
_notes = Note.__table__
NOTE_PAGE = (
    select(*(_notes.c[name] for name in NOTE_FIELDS))
    .where(_notes.c.owner_id == bindparam("owner_id")).order_by(_notes.c.id.desc())
    .limit(bindparam("limit")).offset(bindparam("offset"))
)


class CompiledPage(NamedTuple):
    sql: str
    positions: tuple[str, ...] | None  # the parameters' order, where the driver takes them so (SQLite)
    processors: tuple | None  # what the dialect converts each column's value with, if anything


@functools.lru_cache(maxsize=4)  # one dialect per engine: a process has one (the tests, a few)
def _compiled_page(dialect) -> CompiledPage:
    """NOTE_PAGE as the driver's SQL, with what SQLAlchemy's result would convert: nothing on
    psycopg2; SQLite's datetimes, which come back as text."""
    compiled = NOTE_PAGE.compile(dialect=dialect)
    processors = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                       for column in NOTE_PAGE.selected_columns)
    return CompiledPage(compiled.string, compiled.positiontup and tuple(compiled.positiontup),
                        processors if any(processors) else None)


def read_page(owner_id: int, limit: int, offset: int) -> list[tuple]:
    """The rows of one page, on a pooled connection of its own, returned as soon as they are
    read (datastores.fetch_rows). The autocommit of safe requests, the deadline, the pool's
    bounds and what an error does are the engine's, as for any statement."""
    engine = db.engine
    page = _compiled_page(engine.dialect)
    values = {"owner_id": owner_id, "limit": limit, "offset": offset}
    with engine.connect() as connection:
        rows = fetch_rows(connection, page.sql,
                          tuple(values[name] for name in page.positions) if page.positions else values)
    if page.processors:
        rows = [tuple(value if convert is None else convert(value)
                      for convert, value in zip(page.processors, row, strict=True)) for row in rows]
    return rows


def writer_key() -> str:
    return f"user:{session['user_id']}"


# nginx limits each address; only the app sees the user behind a cookie sent from many. Checked
# before the view, by the session alone; a request without a login is left to the view's 401.
notes_per_user = limiter.limit(
    lambda: f"{current_app.config['NOTES_PER_USER_PER_MINUTE']} per minute", key_func=writer_key,
    exempt_when=lambda: "user_id" not in session, error_message="Too many notes created; retry later.",
)


def owned_note(note_id: int, owner_id: int) -> Note:
    """Someone else's note answers exactly like a missing one: 404, so ids leak nothing."""
    note = None
    if note_id <= NOTE_ID_MAX:
        note = db.session.scalar(select(Note).where(Note.id == note_id, Note.owner_id == owner_id))
    if note is None:
        abort(404, message="No such note.")
    return note


@blp.get("")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, NotePageSchema)
@unauthenticated
def list_notes(query):
    owner_id = current_user_id()
    page, per_page = query["page"], query["per_page"]
    items = read_page(owner_id, limit=per_page + 1, offset=(page - 1) * per_page)
    return {"items": items[:per_page], "page": page, "per_page": per_page, "has_more": len(items) > per_page}


@blp.post("")
@blp.arguments(NoteSchema)
@blp.response(201, NoteSchema)
@blp.doc(parameters=[idempotency.HEADER_PARAMETER])
@blp.alt_response(400, schema=ErrorResponseSchema, description=f"Malformed {idempotency.HEADER}")
@blp.alt_response(429, schema=ErrorResponseSchema, headers=RETRY_AFTER,
                  description="Too many notes created by this user (NOTES_PER_USER_PER_MINUTE); see Retry-After")
@unauthenticated
@notes_per_user
def create_note(fields):
    owner_id = current_user().id
    key = idempotency.requested_key()
    if key is None:
        note = Note(owner_id=owner_id, **fields)
        db.session.add(note)
        db.session.commit()
        return note
    request_hash = idempotency.fingerprint(fields)
    if earlier := idempotency.earlier_answer(owner_id, key, request_hash):
        return earlier
    note = Note(owner_id=owner_id, **fields)
    db.session.add(note)
    db.session.flush()
    idempotency.remember(owner_id, key, request_hash, 201, NoteSchema().dump(note))
    try:
        db.session.commit()
    except IntegrityError:
        # a concurrent request with the same key committed first: answer as it did
        db.session.rollback()
        if earlier := idempotency.earlier_answer(owner_id, key, request_hash):
            return earlier
        raise
    return note


@blp.get(NOTE_PATH)
@blp.response(200, NoteSchema)
@unauthenticated
@not_found
def get_note(note_id):
    return owned_note(note_id, current_user_id())


@blp.patch(NOTE_PATH)
# every field is optional, so no body at all is an empty update, as `{}` is
@blp.arguments(NoteUpdateSchema, required=False)
@blp.response(200, NoteSchema)
@unauthenticated
@not_found
def update_note(fields, note_id):
    note = owned_note(note_id, current_user().id)
    for name, value in fields.items():
        setattr(note, name, value)
    db.session.commit()
    return note


@blp.delete(NOTE_PATH)
@blp.response(204)
@unauthenticated
@not_found
def delete_note(note_id):
    db.session.delete(owned_note(note_id, current_user().id))
    db.session.commit()
