"""Server-side sessions: a random id in the cookie, the data in Redis (or in instance/ files
when the app runs embedded, with no Redis).

Two properties matter here, and are why this is not Flask-Session:
- Logout is final. Only a login creates a session; every later write is "only if it still
  exists" (Redis SET XX). A request that was already in flight when the user logged out can
  therefore never write the session back when it finishes.
- An unchanged session costs no write. Its expiry slides forward at most once per
  SESSION_REFRESH_SECONDS, not on every request.

The id in the cookie is the whole credential, so it is never stored: a session lives under the
SHA-256 of its id (storage_key). Redis's MONITOR and slow log, its RDB and AOF files, a backup
of them, and Sentry's breadcrumbs then hold nothing that can be replayed as a cookie. A plain
hash is enough, since the id is 256 random bits (no guessing, no table), and it keeps sessions
valid across a SECRET_KEY rotation, as before.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from cachelib import FileSystemCache
from flask import Flask, Request, Response
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSession, SessionInterface
from redis import Redis
from redis.exceptions import RedisError

KEY_PREFIX = "session:"
# secrets.token_urlsafe(32): anything else in the cookie is not ours and is never looked up
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
# Load balancers poll these without cookies; they must never wait on the session store.
SESSIONLESS_PATH_PREFIXES = ("/health",)


def storage_key(sid: str) -> str:
    """Where the session with this cookie id is stored."""
    return KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest()


class ServerSession(SecureCookieSession):
    """Flask's change-tracking session dict, plus where it is stored and when it was last written."""

    # every session lives SESSION_LIFETIME_SECONDS (a class attribute: Flask's property would
    # store the flag in the session data itself)
    permanent = True

    def __init__(self, data=None, sid: str | None = None, written_at: float = 0.0):
        super().__init__(data)
        self.sid = sid
        self.new = sid is None
        self.written_at = written_at


class UnavailableSession(ServerSession):
    """Stands in when the store could not be read: the request fails (503, through the
    error handlers, without a traceback) only when it touches the session, and a failed
    read is never mistaken for "not logged in"."""

    def __init__(self, error: Exception):
        super().__init__()
        # without its traceback, which would keep the failed call's frames (and socket) alive
        self.error = error.with_traceback(None)

    def _unavailable(self, *args, **kwargs):
        raise self.error

    __getitem__ = __setitem__ = __delitem__ = __contains__ = _unavailable
    get = setdefault = clear = pop = popitem = update = _unavailable


class RedisStore:
    def __init__(self, client: Redis):
        self.client = client

    def load(self, sid: str) -> bytes | None:
        return self.client.get(storage_key(sid))

    def create(self, sid: str, value: str, ttl: int) -> None:
        self.client.set(storage_key(sid), value, ex=ttl, nx=True)

    def update(self, sid: str, value: str, ttl: int) -> bool:
        """Write only if the session still exists; False if it was deleted (logged out)."""
        return bool(self.client.set(storage_key(sid), value, ex=ttl, xx=True))

    def delete(self, sid: str) -> None:
        self.client.delete(storage_key(sid))


class FileStore:
    """The embedded store: one process tree on one machine, so check-then-write is enough."""

    def __init__(self, directory: str):
        self.cache = FileSystemCache(directory)

    def load(self, sid: str) -> str | None:
        return self.cache.get(storage_key(sid))

    def create(self, sid: str, value: str, ttl: int) -> None:
        self.cache.add(storage_key(sid), value, timeout=ttl)

    def update(self, sid: str, value: str, ttl: int) -> bool:
        key = storage_key(sid)
        return self.cache.has(key) and self.cache.set(key, value, timeout=ttl)

    def delete(self, sid: str) -> None:
        self.cache.delete(storage_key(sid))


class ServerSessionInterface(SessionInterface):
    serializer = TaggedJSONSerializer()

    def __init__(self, store: RedisStore | FileStore, lifetime: int, refresh_after: int):
        self.store = store
        self.lifetime = lifetime
        self.refresh_after = refresh_after

    def open_session(self, app: Flask, request: Request) -> ServerSession | None:
        if request.path.startswith(SESSIONLESS_PATH_PREFIXES):
            return None  # Flask then uses its null session, which nothing can write
        sid = request.cookies.get(self.get_cookie_name(app), "")
        if SESSION_ID.fullmatch(sid):
            try:
                stored = self.store.load(sid)
            except RedisError as error:
                return UnavailableSession(error)
            if stored is not None:
                record = self.serializer.loads(stored)
                return ServerSession(record["data"], sid=sid, written_at=record["written_at"])
        return ServerSession()

    def is_null_session(self, obj) -> bool:
        """Nothing to save: Flask's null session, a store that could not be read, no session at
        all (when opening it failed), or one whose save just failed (the error's answer must
        not try again)."""
        return (not isinstance(obj, ServerSession) or isinstance(obj, UnavailableSession)
                or getattr(obj, "save_failed", False))

    def regenerate(self, session: ServerSession) -> None:
        """A new id for the same data (at login: defeats session fixation)."""
        if not session.new:
            self.store.delete(session.sid)
        session.sid, session.new, session.modified = None, True, True

    def save_session(self, app: Flask, session: ServerSession, response: Response) -> None:
        try:
            self._save(app, session, response)
        except RedisError:
            # down, frozen, or full under `noeviction`: the request fails with a 503
            # (app/errors.py), since its session change is lost
            session.save_failed = True
            raise

    def _save(self, app: Flask, session: ServerSession, response: Response) -> None:
        if session.accessed:
            response.vary.add("Cookie")
        if not session:
            if session.modified and not session.new:
                self.store.delete(session.sid)  # logout
                self._delete_cookie(app, response)
            return
        now = time.time()
        record = self.serializer.dumps({"data": dict(session), "written_at": now})
        if session.new:
            session.sid = secrets.token_urlsafe(32)
            self.store.create(session.sid, record, self.lifetime)
        elif session.modified or now - session.written_at >= self.refresh_after:
            if not self.store.update(session.sid, record, self.lifetime):
                self._delete_cookie(app, response)  # logged out while this request ran
                return
        else:
            return
        response.set_cookie(
            self.get_cookie_name(app), session.sid, expires=self.get_expiration_time(app, session),
            **self._cookie_attributes(app),
        )

    def _delete_cookie(self, app: Flask, response: Response) -> None:
        # the same attributes as the cookie it replaces, or browsers may keep the original
        response.delete_cookie(self.get_cookie_name(app), **self._cookie_attributes(app))

    def _cookie_attributes(self, app: Flask) -> dict:
        return {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app),
        }


def init_app(app: Flask) -> None:
    redis = app.extensions["redis"]
    store = RedisStore(redis) if redis is not None else FileStore(f"{app.instance_path}/sessions")
    app.permanent_session_lifetime = app.config["SESSION_LIFETIME_SECONDS"]
    app.session_interface = ServerSessionInterface(
        store, app.config["SESSION_LIFETIME_SECONDS"], app.config["SESSION_REFRESH_SECONDS"])
