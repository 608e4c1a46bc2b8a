"""The JSON API: accounts, notes, and the OpenAPI document generated from their schemas."""

from flask import Flask
from flask_smorest import Api

from .auth import blp as auth_blp
from .notes import blp as notes_blp
from .schemas import ErrorResponseSchema

SESSION_SCHEME = "session"

BLUEPRINTS = (auth_blp, notes_blp)


class JsonApi(Api):
    # documents our error shape ({"error": {...}}) in the OpenAPI responses
    ERROR_SCHEMA = ErrorResponseSchema


def init_app(app: Flask) -> None:
    app.config.update(
        API_TITLE="Flask deployment kit sample API",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        # served at /api/openapi.json; no Swagger UI, since it would pull scripts from a CDN
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        # every operation needs the session cookie, unless it says otherwise (register, login, logout)
        API_SPEC_OPTIONS={"security": [{SESSION_SCHEME: []}]},
    )
    # one Api per app: flask-smorest keeps per-app state (the spec) on the instance
    api = JsonApi(app)
    api.spec.components.security_scheme(
        SESSION_SCHEME, {"type": "apiKey", "in": "cookie", "name": app.config["SESSION_COOKIE_NAME"]})
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
