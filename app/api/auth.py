"""Accounts: register, login, logout and `me`, with server-side sessions."""

from __future__ import annotations

from flask import current_app, request, session
from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import TooManyRequests

from ..errors import require_json_body
from ..extensions import db
from ..login_limits import login_limits
from ..models import User
from ..passwords import hasher
from .parsing import Blueprint
from .schemas import CredentialsSchema, ErrorResponseSchema, LoginSchema, UserSchema

blp = Blueprint("auth", __name__, url_prefix="/api/auth", description="Accounts and sessions")
blp.before_request(require_json_body)
# overrides the document's default (the session cookie) for the operations anyone may call
public = blp.doc(security=[])

# Compared against when the email is unknown, so a miss costs as much time as a wrong password.
# A literal, not computed at import: one scrypt hash would add ~0.1 s to every worker's boot.
# tests/app/api/test_auth.py checks it uses the parameters generate_password_hash uses today.
UNKNOWN_USER_HASH = (
    "scrypt:32768:8:1$DRaMu5bDxAHCgCfA$11cd67695334bbb25f4977751a8bd2a41998097fa026d0e86c3556bb4bf0d8b7"
    "4c01a688ca1d63c23bc208276ba33a44c4c1fa9bbeb142e76dadce6b79521248"
)


def current_user() -> User:
    user = db.session.get(User, current_user_id())
    if user is None:
        abort(401, message="Log in first.")
    return user


def current_user_id() -> int:
    """The logged-in user's id, from the server-side session alone: no database round trip.
    Enough for reads, which filter by owner: a deleted user's notes went with the user (ON
    DELETE CASCADE). Writes load the user (current_user), so they are refused instead."""
    user_id = session.get("user_id")
    if user_id is None:
        abort(401, message="Log in first.")
    return user_id


@blp.post("/register")
@public
@blp.arguments(CredentialsSchema)
@blp.response(201, UserSchema)
@blp.alt_response(409, schema=ErrorResponseSchema, description="Email already registered")
def register(credentials):
    email = credentials["email"].strip().lower()
    if db.session.scalar(select(User.id).where(User.email == email)) is not None:
        abort(409, message="That email is already registered.")
    user = User(email=email, password_hash=hasher().hash(credentials["password"]))
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        # a concurrent registration won the race for the unique email
        db.session.rollback()
        abort(409, message="That email is already registered.")
    return user


@blp.post("/login")
@public
@blp.arguments(LoginSchema)
@blp.response(200, UserSchema)
@blp.alt_response(401, schema=ErrorResponseSchema, description="Wrong email or password")
@blp.alt_response(429, schema=ErrorResponseSchema, headers={"Retry-After": {"schema": {"type": "integer"}}},
                  description="Too many failed logins for this account or from this address; see Retry-After")
def login(credentials):
    email = credentials["email"].strip().lower()
    limits = login_limits()
    if retry_after := limits.retry_after(email, request.remote_addr):
        raise TooManyRequests("Too many failed logins; retry later.", retry_after=retry_after)
    user = db.session.scalar(select(User).where(User.email == email))
    password_hash = user.password_hash if user else UNKNOWN_USER_HASH
    if not hasher().verify(password_hash, credentials["password"]) or user is None:
        limits.failed(email, request.remote_addr)
        abort(401, message="Wrong email or password.")
    limits.succeeded(email)
    # a new session id at every login defeats session fixation
    current_app.session_interface.regenerate(session)
    session.clear()
    session["user_id"] = user.id
    return user


@blp.post("/logout")
@public
@blp.response(204)
def logout():
    session.clear()


@blp.get("/me")
@blp.response(200, UserSchema)
@blp.alt_response(401, schema=ErrorResponseSchema, description="Not logged in")
def me():
    return current_user()
