"""Request and response schemas: they validate input and generate the OpenAPI document."""

import re

from marshmallow import Schema, fields, validate

from ..models import BODY_MAX_LENGTH, EMAIL_MAX_LENGTH, TITLE_MAX_LENGTH

PASSWORD_MIN_LENGTH = 12
# scrypt hashes whatever it is given; a bound stops multi-megabyte "passwords" burning CPU
PASSWORD_MAX_LENGTH = 256
PER_PAGE_MAX = 100
# page x per_page must stay far below Postgres's bigint OFFSET limit (2^63)
PAGE_MAX = 1_000_000
# The NUL rule as the OpenAPI document states it, so clients (and fuzzers) know it. Unpaired
# surrogates are not stated: they are not text at all (I-JSON, RFC 7493, forbids them), and
# validators that work on UTF-8 (Schemathesis's among them) cannot even represent them.
NO_NUL_PATTERN = r"^[^\x00]*$"


class Text(fields.String):
    """A string Postgres can store and UTF-8 can encode: no NUL character and no unpaired
    surrogate (JSON's "\\ud800" decodes to one). Either would otherwise fail deep in the
    driver with a 500."""

    default_error_messages = {"not_text": "Must not contain NUL characters or unpaired surrogates."}

    def __init__(self, *, metadata=None, **kwargs):
        super().__init__(metadata={"pattern": NO_NUL_PATTERN, **(metadata or {})}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise self.make_error("not_text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise self.make_error("not_text") from None
        return text


class EmailAddress(validate.Email):
    """marshmallow's check, with the domain that the document's `email` format (RFC 5321) means:
    ASCII labels, the last of which may have a single character ("a@b.c"). marshmallow's own
    wants two or more there, yet takes Unicode labels, which the format does not."""

    LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    DOMAIN_REGEX = re.compile(
        rf"(?:{LABEL}\.)+{LABEL}\Z"
        # or an IPv4 literal, as marshmallow allows (RFC 5321, section 4.1.3)
        r"|^\[(25[0-5]|2[0-4]\d|[0-1]?\d?\d)(\.(25[0-5]|2[0-4]\d|[0-1]?\d?\d)){3}\]\Z",
        re.ASCII,
    )


class Email(Text):
    def __init__(self, *, metadata=None, **kwargs):
        super().__init__(metadata={"format": "email", **(metadata or {})}, **kwargs)
        self.validators.insert(0, EmailAddress())


class CredentialsSchema(Schema):
    email = Email(required=True, validate=validate.Length(max=EMAIL_MAX_LENGTH))
    password = Text(
        required=True, load_only=True,
        validate=validate.Length(min=PASSWORD_MIN_LENGTH, max=PASSWORD_MAX_LENGTH),
    )


class LoginSchema(Schema):
    email = Text(required=True, validate=validate.Length(max=EMAIL_MAX_LENGTH))
    password = Text(required=True, load_only=True, validate=validate.Length(max=PASSWORD_MAX_LENGTH))


class UserSchema(Schema):
    id = fields.Integer(dump_only=True)
    email = fields.Email(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


class NoteSchema(Schema):
    id = fields.Integer(dump_only=True)
    title = Text(required=True, validate=validate.Length(min=1, max=TITLE_MAX_LENGTH))
    body = Text(load_default="", validate=validate.Length(max=BODY_MAX_LENGTH))
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


# the columns of a listed note's row (notes.NOTE_PAGE), in order
NOTE_FIELDS = ("id", "title", "body", "created_at", "updated_at")


def note_json(row: tuple) -> dict:
    """NoteSchema's dump of one note, from its row (NOTE_FIELDS), written out: a page of 20
    costs marshmallow a few hundred field calls, a quarter of a read's CPU. A test keeps the
    two equal."""
    id_, title, body, created_at, updated_at = row
    return {"id": id_, "title": title, "body": body,
            "created_at": created_at.isoformat(), "updated_at": updated_at.isoformat()}


class Notes(fields.List):
    """A list of notes' rows: documented as List(Nested(NoteSchema)), serialized by note_json."""

    def __init__(self, **kwargs):
        super().__init__(fields.Nested(NoteSchema), **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else [note_json(row) for row in value]


class NoteUpdateSchema(Schema):
    title = Text(validate=validate.Length(min=1, max=TITLE_MAX_LENGTH))
    body = Text(validate=validate.Length(max=BODY_MAX_LENGTH))


class PageQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=PAGE_MAX))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=PER_PAGE_MAX))


class NotePageSchema(Schema):
    items = Notes()
    page = fields.Integer()
    per_page = fields.Integer()
    has_more = fields.Boolean(metadata={"description": "whether the next page has notes"})


class ErrorBodySchema(Schema):
    code = fields.String(metadata={"description": "stable machine-readable code, e.g. validation_failed"})
    message = fields.String()
    details = fields.Dict(metadata={"description": "per-field messages for validation errors"})


class ErrorResponseSchema(Schema):
    error = fields.Nested(ErrorBodySchema)


# the header every 429 carries (app/limits.py), in the responses that document one
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds until a retry may succeed"}}
