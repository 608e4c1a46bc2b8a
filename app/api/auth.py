"""Accounts: register, login, logout and `me`, with server-side sessions."""

from __future__ import annotations

import hashlib

from flask import current_app, request, session
from flask_limiter.util import get_remote_address
from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import limits
from ..errors import require_json_body
from ..extensions import db, limiter
from ..models import User
from ..passwords import hasher
from .parsing import Blueprint
from .schemas import RETRY_AFTER, CredentialsSchema, ErrorResponseSchema, LoginSchema, UserSchema

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


def canonical_email(email: str) -> str:
    return email.strip().lower()


def account_key() -> str:
    """The account a login names, as a digest, so the limiter's keys hold no email address. The
    body is valid by then: the limits wrap the view inside its argument parsing."""
    email = canonical_email(request.get_json()["email"])
    return "account:" + hashlib.sha256(email.encode()).hexdigest()[:32]


def failed_logins(count_setting: str, key_func):
    """At most `count_setting` failed logins per LOGIN_FAILURE_WINDOW_SECONDS (a fixed window from
    the first failure) under key_func's key. Only a 401 counts, so users who type their password
    right are never limited. Past the limit, login answers 429 with Retry-After, the right
    password included, and before the view runs: a refused attempt hashes nothing."""
    def limit() -> str:  # read per request: each app has its own settings
        config = current_app.config
        return f"{config[count_setting]} per {config['LOGIN_FAILURE_WINDOW_SECONDS']} seconds"

    return limiter.limit(limit, key_func=key_func, deduct_when=lambda response: response.status_code == 401,
                         error_message="Too many failed logins; retry later.")


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
    email = canonical_email(credentials["email"])
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
@blp.alt_response(429, schema=ErrorResponseSchema, headers=RETRY_AFTER,
                  description="Too many failed logins for this account or from this address; see Retry-After")
# Failures count against the account (one password guessed from many addresses) and the address
# (many accounts tried from one place). The price of counting failures only: an attacker can hold
# one account at its limit; the per-address limit bounds how many accounts one address can do that to.
@failed_logins("LOGIN_FAILURES_PER_ACCOUNT", account_key)
@failed_logins("LOGIN_FAILURES_PER_ADDRESS", get_remote_address)
def login(credentials):
    email = canonical_email(credentials["email"])
    user = db.session.scalar(select(User).where(User.email == email))
    password_hash = user.password_hash if user else UNKNOWN_USER_HASH
    if not hasher().verify(password_hash, credentials["password"]) or user is None:
        abort(401, message="Wrong email or password.")
    limits.forget(account_key())  # a successful login clears its account's count
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
