"""The API's blueprint class, with a request parser that answers 400 to any JSON it cannot
decode: webargs catches malformed JSON, but not JSON nested too deeply for Python's decoder
(100,000 `[` raise RecursionError), which would otherwise be a 500."""

import flask_smorest
from webargs.flaskparser import FlaskParser


class JsonParser(FlaskParser):
    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except RecursionError as error:
            self._handle_invalid_json_error(error, req)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = JsonParser()
