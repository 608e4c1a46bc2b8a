"""Server-side sessions on Flask-Session: a random id in the cookie, the data in Redis (or in
instance/ files through its cachelib backend when the app runs embedded, with no Redis).

Flask-Session 0.8 sets the cookie, makes the id (secrets.token_urlsafe(32)), issues a new one at
login (regenerate) and writes only changed sessions (SESSION_REFRESH_EACH_REQUEST off). The
subclasses below add what its code does not keep (flask_session/base.py, redis/redis.py and
cachelib/cachelib.py of 0.8.0 in the venv):
- Logout is final. Its backends write every session with a plain SET (`_upsert_session`), so a
  request that was in flight when the user logged out would bring the session back when it
  finishes. Here only a login (regenerate) creates a session; every later write is "only if it
  still exists" (Redis SET XX), and a write that finds it gone deletes the cookie.
- An unchanged session's expiry slides, at most once per SESSION_REFRESH_SECONDS. Flask-Session
  either writes every request (SESSION_REFRESH_EACH_REQUEST) or never moves an unchanged
  session's expiry; should_set_storage adds the interval, so the record keeps when it was written.
- The id in the cookie is the whole credential, so it is never stored: a session lives under the
  SHA-256 of its id (storage_key), not Flask-Session's `key_prefix + sid`. Redis's MONITOR and
  slow log, its RDB and AOF files, a backup of them, and Sentry's breadcrumbs then hold nothing
  that can be replayed as a cookie. A plain hash is enough, since the id is 256 random bits (no
  guessing, no table). A cookie that is not one of our ids is never looked up at all.
- Health probes never open a session, and a store that cannot be read fails only the requests
  that touch the session (503), where Flask-Session's open_session would fail every request.
- Logout deletes the cookie with the attributes it was set with; base.py's save_session passes
  only its domain and path, and browsers may then keep the original.
- Records keep the format of the release before Flask-Session (RecordSerializer), so neither
  the upgrade nor a rollback signs anyone out.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta

from cachelib import FileSystemCache
from flask import Flask, Request, Response
from flask.json.tag import TaggedJSONSerializer
from flask_session.base import Serializer, ServerSideSession
from flask_session.cachelib import CacheLibSessionInterface
from flask_session.redis import RedisSessionInterface
from redis.exceptions import RedisError

KEY_PREFIX = "session:"
# secrets.token_urlsafe(32): anything else in the cookie is not ours and is never looked up
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
# Load balancers poll these without cookies; they must never wait on the session store.
SESSIONLESS_PATH_PREFIXES = ("/health",)
# Carries a stored record's write time from RecordSerializer.decode into Session, which pops it.
WRITTEN_AT = "_written_at"


def storage_key(sid: str) -> str:
    """Where the session with this cookie id is stored."""
    return KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest()


class SessionEnded(Exception):
    """The session was deleted (a logout) while this request ran."""


class Session(ServerSideSession):
    """Flask-Session's session, plus when it was last written (None: never stored) and whether
    this request's login created it."""

    created = False

    def __init__(self, initial=None, sid: str | None = None, permanent: bool | None = None):
        initial = dict(initial or {})
        self.written_at: float | None = initial.pop(WRITTEN_AT, None)
        super().__init__(initial, sid, permanent)


class UnavailableSession(Session):
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


class RecordSerializer(Serializer):
    """{"data": ..., "written_at": ...} in Flask's tagged JSON, as the release before Flask-Session
    stored sessions. Flask-Session's msgpack would be a 500 for that release after a rollback, and
    its records carry no write time."""

    tagged = TaggedJSONSerializer()

    def encode(self, session: Session) -> str:
        return self.tagged.dumps({"data": dict(session), "written_at": time.time()})

    def decode(self, serialized_data: bytes | str) -> dict:
        record = self.tagged.loads(serialized_data)
        # every session is permanent (SESSION_PERMANENT); the older records lack the flag
        return {"_permanent": True, **record["data"], WRITTEN_AT: record["written_at"]}


class GuardedSessionInterface:
    """What both backends add to Flask-Session (the module's docstring says why)."""

    session_class = Session

    def __init__(self, *, refresh_after: int, **options):
        super().__init__(**options)
        self.serializer = RecordSerializer()  # set by the base's __init__, so replaced after it
        self.refresh_after = refresh_after

    def _get_store_id(self, sid: str) -> str:
        return storage_key(sid)

    def open_session(self, app: Flask, request: Request) -> Session | None:
        if request.path.startswith(SESSIONLESS_PATH_PREFIXES):
            return None  # Flask then uses its null session, which nothing can write
        sid = request.cookies.get(self.get_cookie_name(app))
        if sid and not SESSION_ID.fullmatch(sid):
            return self.session_class(sid=self._generate_sid(self.sid_length), permanent=self.permanent)
        try:
            return super().open_session(app, request)
        except RedisError as error:
            return UnavailableSession(error)

    def is_null_session(self, obj) -> bool:
        """Nothing to save: Flask's null session, a store that could not be read, no session at
        all (when opening it failed), or one whose save just failed (the error's answer must
        not try again)."""
        return (not isinstance(obj, Session) or isinstance(obj, UnavailableSession)
                or getattr(obj, "save_failed", False))

    def regenerate(self, session: Session) -> None:
        """Flask-Session's new id (at login: defeats session fixation), which may create the session."""
        super().regenerate(session)
        session.created = True

    def should_set_storage(self, app: Flask, session: Session) -> bool:
        """Changed, or an expiry to slide: last written SESSION_REFRESH_SECONDS ago or more."""
        return (super().should_set_storage(app, session)
                or time.time() - (session.written_at or 0) >= self.refresh_after)

    def should_set_cookie(self, app: Flask, session: Session) -> bool:
        # asked only after a write: the cookie's expiry follows the stored one
        return True

    def save_session(self, app: Flask, session: Session, response: Response) -> None:
        try:
            if session or not session.modified:
                super().save_session(app, session, response)
                return
            if session.written_at is None:
                return  # emptied before it was ever stored: nothing to end
            self._delete_session(self._get_store_id(session.sid))  # logout
        except SessionEnded:
            pass  # logged out while this request ran: its cookie goes too
        except RedisError:
            # down, frozen, or full under `noeviction`: the request fails with a 503
            # (app/errors.py), since its session change is lost
            session.save_failed = True
            raise
        response.vary.add("Cookie")
        # the same attributes as the cookie it replaces, or browsers may keep the original
        response.delete_cookie(
            self.get_cookie_name(app), domain=self.get_cookie_domain(app), path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app), httponly=self.get_cookie_httponly(app),
            samesite=self.get_cookie_samesite(app),
        )


class RedisSessions(GuardedSessionInterface, RedisSessionInterface):
    def _upsert_session(self, session_lifetime: timedelta, session: Session, store_id: str) -> None:
        """The base's SET, with XX unless a login created the session."""
        stored = self.client.set(store_id, self.serializer.encode(session),
                                 ex=int(session_lifetime.total_seconds()), xx=not session.created)
        if not stored:
            raise SessionEnded


class FileSessions(GuardedSessionInterface, CacheLibSessionInterface):
    """The embedded store: one process tree on one machine, so check-then-write is enough.
    The base stores the session's dict as is; records here are RecordSerializer's, as in Redis."""

    def _retrieve_session_data(self, store_id: str) -> dict | None:
        stored = self.cache.get(store_id)
        return None if stored is None else self.serializer.decode(stored)

    def _upsert_session(self, session_lifetime: timedelta, session: Session, store_id: str) -> None:
        if not (session.created or self.cache.has(store_id)):
            raise SessionEnded
        self.cache.set(store_id, self.serializer.encode(session), timeout=int(session_lifetime.total_seconds()))


def init_app(app: Flask) -> None:
    redis = app.extensions["redis"]
    app.permanent_session_lifetime = app.config["SESSION_LIFETIME_SECONDS"]
    refresh_after = app.config["SESSION_REFRESH_SECONDS"]
    if redis is not None:
        app.session_interface = RedisSessions(app=app, client=redis, refresh_after=refresh_after)
    else:
        app.session_interface = FileSessions(
            app=app, client=FileSystemCache(f"{app.instance_path}/sessions"), refresh_after=refresh_after)
