"""Request and response schemas: they validate input and generate the OpenAPI document."""

from marshmallow import Schema, fields, validate

from ..models import BODY_MAX_LENGTH, EMAIL_MAX_LENGTH, TITLE_MAX_LENGTH

PASSWORD_MIN_LENGTH = 12
# scrypt hashes whatever it is given; a bound stops multi-megabyte "passwords" burning CPU
PASSWORD_MAX_LENGTH = 256
PER_PAGE_MAX = 100


class CredentialsSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=EMAIL_MAX_LENGTH))
    password = fields.String(
        required=True, load_only=True,
        validate=validate.Length(min=PASSWORD_MIN_LENGTH, max=PASSWORD_MAX_LENGTH),
    )


class LoginSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(max=EMAIL_MAX_LENGTH))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=PASSWORD_MAX_LENGTH))


class UserSchema(Schema):
    id = fields.Integer(dump_only=True)
    email = fields.Email(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


class NoteSchema(Schema):
    id = fields.Integer(dump_only=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=TITLE_MAX_LENGTH))
    body = fields.String(load_default="", validate=validate.Length(max=BODY_MAX_LENGTH))
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class NoteUpdateSchema(Schema):
    title = fields.String(validate=validate.Length(min=1, max=TITLE_MAX_LENGTH))
    body = fields.String(validate=validate.Length(max=BODY_MAX_LENGTH))


class PageQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=PER_PAGE_MAX))


class NotePageSchema(Schema):
    items = fields.List(fields.Nested(NoteSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()


class ErrorBodySchema(Schema):
    code = fields.String(metadata={"description": "stable machine-readable code, e.g. validation_failed"})
    message = fields.String()
    details = fields.Dict(metadata={"description": "per-field messages for validation errors"})


class ErrorResponseSchema(Schema):
    error = fields.Nested(ErrorBodySchema)
