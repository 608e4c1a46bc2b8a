"""JSON logs (app/logs.py): request ids kept or replaced, one line per record that a client
cannot forge, and the request's context on the app's lines."""

import io
import json
import logging

import pytest

from app.logs import json_formatter, request_id_from


@pytest.mark.parametrize("header", ["abc-123", "f" * 128, "a.b_c-D"])
def test_well_formed_request_ids_are_kept(header):
    assert request_id_from(header) == header


@pytest.mark.parametrize("header", [None, "", "x" * 129, "a b", 'a"b', "a\nb", "{json}"])
def test_other_request_ids_are_replaced(header):
    generated = request_id_from(header)

    assert generated != header
    assert len(generated) == 32 and generated.isalnum()


def test_records_are_one_json_line_that_cannot_be_forged():
    record = logging.LogRecord("app", logging.INFO, __file__, 1, 'user said "hi"\n{"level": "ERROR"}', None, None)
    record.request_id = "abc"

    line = json_formatter().format(record)

    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == 'user said "hi"\n{"level": "ERROR"}'
    assert parsed["level"] == "INFO" and parsed["logger"] == "app" and parsed["request_id"] == "abc"
    assert parsed["timestamp"].endswith("+00:00")


def test_app_log_lines_carry_the_request_context(app, client):
    @app.get("/_test/log")
    def log_something():
        logging.getLogger("app.test").warning("inside a request")
        return {}

    handler = next(h for h in logging.getLogger().handlers if getattr(h, "app_json_handler", False))
    output = io.StringIO()
    stdout = handler.setStream(output)
    try:
        client.get("/_test/log", headers={"X-Request-ID": "req-42"})
    finally:
        handler.setStream(stdout)

    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    assert lines == [{
        "timestamp": lines[0]["timestamp"], "level": "WARNING", "logger": "app.test",
        "message": "inside a request", "request_id": "req-42", "method": "GET",
        "path": "/_test/log", "remote_addr": "127.0.0.1",
    }]
