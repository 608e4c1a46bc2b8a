"""Idempotency-Key for POST: a retried write returns its first answer and creates nothing.

The client sends any unique key (a UUID) with a write and the same key with every retry of it.
The key, a digest of the request and the answer are stored in Postgres in the same transaction
as the write, so the pair commits or vanishes together; this also covers a COMMIT whose answer
was lost (the client saw a 503, yet the row exists). Keys are per user and kept
IDEMPOTENCY_KEY_TTL_SECONDS. Semantics follow draft-ietf-httpapi-idempotency-key-header: the
same key with a different body is a 422; a concurrent duplicate waits for the first request
(the primary key's lock) and then gets its answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

from flask import current_app, jsonify, request
from flask_smorest import abort
from sqlalchemy import delete, select

from ..extensions import db
from ..models import IDEMPOTENCY_KEY_MAX_LENGTH, IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# visible ASCII, as for any header value worth logging
KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")

HEADER_PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
               "pattern": r"^[\x21-\x7e]+$"},
    "description": "A unique key (e.g. a UUID) sent with the write and with every retry of it: a retry "
                   f"returns the first answer, marked `{REPLAYED_HEADER}: true`, and creates nothing. "
                   "The same key with a different body is refused with 422.",
}


def requested_key() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not KEY_PATTERN.fullmatch(key):
        abort(400, message=f"{HEADER} must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} visible ASCII characters.")
    return key


def fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def earlier_answer(owner_id: int, key: str, request_hash: str):
    """The stored answer for this key as a response, or None if there is none (or it expired)."""
    stored = db.session.scalar(select(IdempotencyKey).where(
        IdempotencyKey.owner_id == owner_id, IdempotencyKey.key == key,
        IdempotencyKey.created_at >= _expired_before()))
    if stored is None:
        return None
    if stored.request_hash != request_hash:
        abort(422, message=f"This {HEADER} was used with a different request body.",
              messages={"headers": {HEADER: ["Already used with a different request body."]}})
    response = jsonify(stored.response_body)
    response.status_code = stored.status_code
    response.headers[REPLAYED_HEADER] = "true"
    return response


def remember(owner_id: int, key: str, request_hash: str, status_code: int, body: dict) -> None:
    """Add the answer to the current transaction; this owner's expired keys (this one's
    included) are deleted in the same transaction."""
    db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.owner_id == owner_id,
                                                    IdempotencyKey.created_at < _expired_before()))
    db.session.add(IdempotencyKey(owner_id=owner_id, key=key, request_hash=request_hash,
                                  status_code=status_code, response_body=body))


def _expired_before() -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=current_app.config["IDEMPOTENCY_KEY_TTL_SECONDS"])
