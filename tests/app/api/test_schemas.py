"""The request schemas (app/api/schemas.py): the e-mail addresses registration takes, and the
documented pattern that refuses NUL characters."""

import re

import pytest

from app.api.schemas import NO_NUL_PATTERN, CredentialsSchema


@pytest.mark.parametrize("email, valid", [
    ("ada@example.com", True),
    ("a@b.c", True),  # RFC 5321, and so the `email` format, allows a one-character top-level domain
    ("a@[192.0.2.1]", True),
    ("a@localhost", True),
    ("a@bücher.de", False),  # the format wants the ASCII (punycode) form: a@xn--bcher-kva.de
    ("a@example", False),
    ("a@-example.com", False),
    ("ada.example.com", False),
])
def test_registration_takes_the_addresses_the_email_format_describes(email, valid):
    errors = CredentialsSchema().validate({"email": email, "password": "correct horse battery"})

    assert ("email" not in errors) is valid, errors


@pytest.mark.parametrize("text, valid", [("a note", True), ("", True), ("a\x00b", False)])
def test_the_documented_pattern_is_the_nul_check(text, valid):
    errors = CredentialsSchema().validate({"email": "ada@example.com", "password": f"correct horse {text}"})

    assert (re.search(NO_NUL_PATTERN, text) is not None) is valid
    assert ("password" not in errors) is valid, errors
