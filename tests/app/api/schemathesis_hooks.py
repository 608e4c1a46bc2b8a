"""Schemathesis hooks for test_fuzz.py. The schemathesis process loads them (`hooks` in its
config); pytest does not."""

import itertools

import schemathesis

from app.api.idempotency import HEADER, KEY_PATTERN
from app.models import IDEMPOTENCY_KEY_MAX_LENGTH

_suffixes = itertools.count()


@schemathesis.hook
def before_call(context, case, kwargs):
    """Each well-formed Idempotency-Key gets a suffix of its own, as a client must use a key
    for one write only. The fuzzer draws few distinct keys ("0", "00", ...); a key reused with
    another body is the documented 422, and one reused after a DELETE replays the deleted note,
    which its checks would misread as a valid body refused and a resource lost. Retries with a
    key are tested in test_idempotency.py. Malformed keys go out as drawn, to be refused."""
    key = case.headers.get(HEADER) if case.headers else None
    if case.operation.label == "POST /api/notes" and isinstance(key, str) and KEY_PATTERN.fullmatch(key):
        case.headers[HEADER] = f"{key}.{next(_suffixes)}"[-IDEMPOTENCY_KEY_MAX_LENGTH:]


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Every failure counts but a 414's: Gunicorn answers that itself, before the app and as
    text/html, to a request line longer than its limit_request_line (4094 bytes), which a drawn
    query (one parameter repeated many times) can reach. The app never answers 414."""
    return response.status_code != 414
