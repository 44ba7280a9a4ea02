import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alchemist.credentials import CredentialsError, parse_basic, parse_bearer


def basic(raw: str) -> str:
    return "Basic " + base64.b64encode(raw.encode()).decode()


def test_basic_gives_username_and_password_with_colons_kept() -> None:
    creds = parse_basic(basic("ann@example.com:pa:ss wörd"))
    assert (creds.username, creds.password) == ("ann@example.com", "pa:ss wörd")


def test_scheme_is_case_insensitive() -> None:
    assert parse_bearer("bearer abc.def.ghi") == "abc.def.ghi"
    assert parse_basic("BASIC " + basic("a@b.c:x")[6:]).username == "a@b.c"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Missing credentials"),
        ("", "Missing credentials"),
        ("   ", "Missing credentials"),
        ("Bearer abc", "scheme must be Basic"),
        ("Basic", "no credential"),
        ("Basic !!!notbase64", "not valid base64"),
        ("Basic " + base64.b64encode(b"\xff\xfe").decode(), "not valid base64 of UTF-8"),
        (basic("no-colon"), "username:password"),
        (basic(":password"), "empty username"),
    ],
)
def test_bad_basic_headers_say_what_is_wrong(header: str | None, message: str) -> None:
    with pytest.raises(CredentialsError, match=message):
        parse_basic(header)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Missing credentials"),
        ("Bearer", "no credential"),
        ("Bearer    ", "no credential"),
        ("Basic YTpi", "scheme must be Bearer"),
        ("Token abc", "scheme must be Bearer"),
        ("Bearer a b", "single token"),
    ],
)
def test_bad_bearer_headers_say_what_is_wrong(header: str | None, message: str) -> None:
    with pytest.raises(CredentialsError, match=message):
        parse_bearer(header)


@given(st.one_of(st.none(), st.text()))
def test_parsing_any_header_raises_nothing_but_credentials_error(header: str | None) -> None:
    for parse in (parse_basic, parse_bearer):
        with contextlib.suppress(CredentialsError):
            parse(header)
