"""Flask's JSON provider, with orjson writing the JSON answers (`jsonify`: the API's, the
errors', the health checks'). Everything else that uses the provider (app.json.dumps and loads)
keeps Flask's encoder and decoder.

Flask's own encoder (the standard library's, keys sorted) cost 4 % of an authenticated read's
app CPU in a loaded worker, for a page of 20 notes; orjson writes the same page about ten times
faster (bench/changes.md). The output keeps Flask's shape: keys sorted, compact, a newline at the
end, and indented in debug mode (Flask's own path). Two differences, both still JSON that any
client reads the same: text outside ASCII is written as UTF-8 rather than \\u escapes, and a
float that is not a number (NaN, infinity) is written as null. Whatever orjson cannot write
itself goes to Flask's `default`, as before: dates as HTTP dates, decimals and UUIDs as text,
dataclasses as objects; and a value it refuses outright (an integer beyond 64 bits, a key that
is not text) falls back to Flask's encoder. Reading stays Flask's, so a malformed body is
refused exactly as before.
"""

from __future__ import annotations

import orjson
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider

# Dates and dataclasses through Flask's `default`, as its encoder writes them.
OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class OrjsonProvider(DefaultJSONProvider):
    def response(self, *args, **kwargs) -> Response:
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)  # indented, by Flask's encoder
        obj = self._prepare_response_obj(args, kwargs)
        try:
            body = orjson.dumps(obj, default=self.default, option=OPTIONS)
        except orjson.JSONEncodeError:
            return super().response(obj)
        return self._app.response_class(body + b"\n", mimetype=self.mimetype)


def init_app(app: Flask) -> None:
    app.json = OrjsonProvider(app)
