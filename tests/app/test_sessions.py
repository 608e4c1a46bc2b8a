"""Server-side sessions in real Redis: logout is final, and an unchanged session costs no write."""

import json
import secrets

from app import create_app
from app.sessions import storage_key


def redis_commands(app, name: str) -> int:
    """How many times Redis has run a command (its own statistics, not a spy)."""
    stats = app.extensions["redis"].info("commandstats")
    return stats.get(f"cmdstat_{name}", {}).get("calls", 0)


def test_the_stored_key_is_not_the_credential(app, auth, client):
    """Redis (its MONITOR, slow log, dumps and backups) never holds the id from the cookie."""
    auth.register_and_login()
    cookie = client.get_cookie("session").value

    keys = [key.decode() for key in app.extensions["redis"].keys("session:*")]

    assert keys == [storage_key(cookie)]
    assert cookie not in keys[0]
    assert client.get("/api/auth/me").status_code == 200


def test_an_unchanged_session_is_not_written_back(app, auth, client):
    auth.register_and_login()
    before = redis_commands(app, "set")

    for _ in range(5):
        assert client.get("/api/auth/me").status_code == 200

    assert redis_commands(app, "set") == before


def test_an_unchanged_session_is_refreshed_once_the_interval_passed(app_env, auth):
    app = create_app({**app_env, "SESSION_REFRESH_SECONDS": "0"})
    auth.client = client = app.test_client()
    auth.register_and_login()
    before = redis_commands(app, "set")

    response = client.get("/api/auth/me")

    assert redis_commands(app, "set") == before + 1
    assert "session=" in response.headers["Set-Cookie"]  # the cookie's expiry slides too


def test_a_request_in_flight_at_logout_does_not_bring_the_session_back(app_env, auth):
    """The request opened its session before the logout and saves it after: its write must
    not recreate the session (SET XX). With a refresh due on every request, it tries."""
    app = create_app({**app_env, "SESSION_REFRESH_SECONDS": "0"})
    auth.client = client = app.test_client()
    auth.register_and_login()
    cookie = client.get_cookie("session").value

    with app.test_request_context("/api/auth/me", headers={"Cookie": f"session={cookie}"}) as in_flight:
        assert in_flight.session["user_id"]  # loaded before the logout
        assert client.post("/api/auth/logout").status_code == 204
        response = app.response_class()
        app.session_interface.save_session(app, in_flight.session, response)

    assert app.extensions["redis"].keys("session:*") == []
    assert response.headers["Set-Cookie"].startswith("session=;")
    client.set_cookie("session", cookie)
    assert client.get("/api/auth/me").status_code == 401


def test_logout_deletes_the_cookie_with_its_attributes(app_env, auth):
    app = create_app({**app_env, "SESSION_COOKIE_SECURE": "true"})
    auth.client = client = app.test_client()
    auth.register_and_login()

    response = client.post("/api/auth/logout")

    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("session=;")
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=0"):
        assert attribute in cookie, attribute


def test_a_cookie_that_is_not_a_session_id_is_never_looked_up(app, client):
    before = redis_commands(app, "get")
    client.set_cookie("session", "../../etc/passwd")

    assert client.get("/api/auth/me").status_code == 401
    assert redis_commands(app, "get") == before


def test_an_unreadable_store_is_503_for_routes_that_use_the_session(app, auth, client, redis_server):
    auth.register_and_login()
    # Redis stops answering until it is thawed: both requests meet it (a timed CLIENT PAUSE, which
    # also held back its own UNPAUSE, could end before the logout on a loaded machine)
    redis_server.freeze()
    try:
        me = client.get("/api/auth/me")
        logout = client.post("/api/auth/logout")
    finally:
        redis_server.thaw()

    assert me.status_code == 503 and me.json["error"]["code"] == "service_unavailable"
    assert logout.status_code == 503, "a logout that could not delete the session must not claim success"
    assert client.get("/api/auth/me").status_code == 200


def test_records_keep_the_format_of_the_release_before_flask_session(app, auth, client):
    """{"data", "written_at"} in JSON, as before: neither the upgrade nor a rollback signs anyone out."""
    auth.register_and_login()
    redis = app.extensions["redis"]
    record = json.loads(redis.get(storage_key(client.get_cookie("session").value)))
    assert set(record) == {"data", "written_at"} and record["data"]["user_id"]

    sid = secrets.token_urlsafe(32)  # a session the release before wrote
    redis.set(storage_key(sid), json.dumps({"data": {"user_id": record["data"]["user_id"]}, "written_at": 0}), ex=60)
    earlier = app.test_client()
    earlier.set_cookie("session", sid)
    response = earlier.get("/api/auth/me")

    assert response.status_code == 200
    assert "Expires=" in response.headers["Set-Cookie"], "its expiry slides, and it stays a lasting cookie"
