"""The API's blueprint class. Its request parser answers 400 to any JSON it cannot decode:
webargs catches malformed JSON, but not JSON nested too deeply for Python's decoder (100,000
`[` raise RecursionError), which would otherwise be a 500. Its argument schemas are built once."""

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

    def arguments(self, schema, *args, **kwargs):
        # webargs builds a schema given as a class anew on every request (0.04 ms, 2 % of a page
        # read's CPU); an instance holds no state between loads, so one serves every request.
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)
