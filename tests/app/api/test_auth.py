"""The auth API (app/api/auth.py): registration, login and logout, one 401 for every wrong
credential, session ids renewed at login and kept in Redis, and the cookie's flags."""

import pytest

from app.extensions import db
from app.models import User


def test_register_hashes_the_password(client, app):
    response = client.post("/api/auth/register", json={"email": "Ada@Example.com", "password": "correct horse battery"})

    assert response.status_code == 201
    assert response.json["email"] == "ada@example.com"
    assert "password" not in response.json
    with app.app_context():
        stored = db.session.scalars(db.select(User)).one()
        assert stored.password_hash.startswith("scrypt:")
        assert "correct horse battery" not in stored.password_hash


def test_register_twice_is_a_conflict(auth):
    auth.register()

    response = auth.register()

    assert response.status_code == 409
    assert response.json["error"]["code"] == "conflict"


def test_login_then_me_then_logout(auth, client):
    auth.register()

    assert auth.login().status_code == 200
    assert client.get("/api/auth/me").json["email"] == "ada@example.com"
    assert client.post("/api/auth/logout").status_code == 204
    assert client.get("/api/auth/me").status_code == 401


@pytest.mark.parametrize("email, password", [
    ("ada@example.com", "wrong password here"),
    ("nobody@example.com", "correct horse battery"),
])
def test_wrong_credentials_get_the_same_401(auth, email, password):
    auth.register()

    response = auth.login(email, password)

    assert response.status_code == 401
    assert response.json["error"]["message"] == "Wrong email or password."


def test_login_regenerates_the_session_id(auth, client):
    auth.register()
    client.get("/api/auth/me")  # no session yet
    client.set_cookie("session", "attacker-chosen-id")

    auth.login()

    assert client.get_cookie("session").value != "attacker-chosen-id"


def test_sessions_live_in_redis(auth, app):
    auth.register_and_login()

    keys = app.extensions["redis"].keys("session:*")

    assert len(keys) == 1


def test_session_cookie_flags_in_production_shape(app_env):
    from app import create_app

    app = create_app({**app_env, "SESSION_COOKIE_SECURE": "true"})
    client = app.test_client()
    client.post("/api/auth/register", json={"email": "ada@example.com", "password": "correct horse battery"})

    response = client.post("/api/auth/login", json={"email": "ada@example.com", "password": "correct horse battery"})

    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_the_unknown_user_hash_costs_what_a_real_one_costs():
    """Its method and scrypt parameters are those of a hash made today, so a miss takes as
    long as a wrong password (and a Werkzeug upgrade that changes them fails here)."""
    from werkzeug.security import check_password_hash, generate_password_hash

    from app.api.auth import UNKNOWN_USER_HASH

    assert UNKNOWN_USER_HASH.split("$")[0] == generate_password_hash("x").split("$")[0]
    assert check_password_hash(UNKNOWN_USER_HASH, "timing-equaliser-for-unknown-users")
