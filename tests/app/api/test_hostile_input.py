"""Input a fuzzer or an attacker sends: each gets a 4xx in the JSON error shape, never a 500,
and nothing is logged at ERROR (a traceback per hostile request would be a log flood)."""

import logging

import pytest


@pytest.fixture
def logged_in(auth):
    auth.register_and_login()
    return auth.client


def assert_client_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["error"]["code"] == code


@pytest.mark.parametrize("query", [
    "page=99999999999999999999",
    "page=1000001",
    "page=92233720368547758&per_page=100",
    "page=1%00",
])
def test_page_numbers_past_any_offset_are_422(logged_in, query, caplog):
    with caplog.at_level(logging.ERROR):
        response = logged_in.get(f"/api/notes?{query}")

    assert_client_error(response, 422, "validation_failed")
    assert "page" in response.json["error"]["details"]
    assert not caplog.records


@pytest.mark.parametrize("field, value", [
    ("title", "a\u0000b"),
    ("body", "a\u0000b"),
    ("title", "a\ud800b"),
    ("body", "\udfff"),
])
def test_note_text_without_a_storable_form_is_422(logged_in, field, value, caplog):
    payload = {"title": "t", field: value}
    with caplog.at_level(logging.ERROR):
        created = logged_in.post("/api/notes", json=payload)

    assert_client_error(created, 422, "validation_failed")
    assert created.json["error"]["details"] == {field: ["Must not contain NUL characters or unpaired surrogates."]}
    assert logged_in.get("/api/notes").json["items"] == []
    assert not caplog.records


@pytest.mark.parametrize("path, payload", [
    ("/api/auth/login", {"email": "a\u0000@example.com", "password": "correct horse battery"}),
    ("/api/auth/login", {"email": "ada@example.com", "password": "correct\ud800horse battery"}),
    ("/api/auth/login", {"email": "a\udc00@example.com", "password": "correct horse battery"}),
    ("/api/auth/register", {"email": "ada@example.com", "password": "correct\u0000horse battery"}),
    ("/api/auth/register", {"email": "a\ud800@example.com", "password": "correct horse battery"}),
])
def test_credentials_without_a_storable_form_are_422(client, path, payload, caplog):
    with caplog.at_level(logging.ERROR):
        response = client.post(path, json=payload)

    assert_client_error(response, 422, "validation_failed")
    assert not caplog.records


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_json_nested_too_deeply_is_400(logged_in, depth, caplog):
    body = b"[" * depth + b"]" * depth
    with caplog.at_level(logging.ERROR):
        response = logged_in.post("/api/notes", data=body, content_type="application/json")

    assert_client_error(response, 400, "bad_request")
    assert not caplog.records


def test_updates_are_checked_like_creates(logged_in):
    note = logged_in.post("/api/notes", json={"title": "t"}).json

    response = logged_in.patch(f"/api/notes/{note['id']}", json={"title": "x\u0000"})

    assert_client_error(response, 422, "validation_failed")
    assert logged_in.get(f"/api/notes/{note['id']}").json["title"] == "t"
