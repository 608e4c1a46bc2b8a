"""Extensions are created unbound here and bound to an app in the factory."""

import logging

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase

log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class Database(SQLAlchemy):
    """Flask-SQLAlchemy, with a request's teardown that cannot fail the request after its answer.

    Teardown rolls back what the request left open. If Postgres stops answering right then, the
    rollback ends at the request's deadline; raised from teardown, that error would replace an
    answer already made with Gunicorn's HTML 500. The connection is discarded either way.
    """

    def _teardown_session(self, exc: BaseException | None) -> None:
        try:
            super()._teardown_session(exc)
        except DBAPIError as error:
            log.warning("rollback at teardown failed: %s", type(error.orig).__name__)
            # remove() stops at the failed close(); forget the session, or a later app context
            # with the same id would be handed this broken one
            self.session.registry.clear()


# Objects keep their values after a commit: a view that answers with what it just wrote needs
# no second transaction to read it back (the defaults are computed in Python, so the values
# are the stored ones).
db = Database(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
# Limits are declared on views only (no default, application or blueprint limits: app/limits.py
# drops the check Flask-Limiter runs for those before every request).
limiter = Limiter(key_func=get_remote_address)
