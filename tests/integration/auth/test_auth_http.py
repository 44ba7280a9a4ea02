"""The auth service over a real socket, on SQLite and on the real MariaDB."""

from __future__ import annotations

import base64
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from alchemist.db.engine import build_engine
from alchemist.tokens import TokenSigner

from .conftest import USERS, AuthService


def login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    return client.post("/login", auth=(user, password))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_returns_a_jwt_body_that_validate_accepts(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        response = login(client, "ann@example.com", "ann-password-1")
        assert response.status_code == 200
        token = response.text
        assert token.count(".") == 2
        claims = client.post("/validate", headers=bearer(token))
    assert claims.status_code == 200
    body = claims.json()
    assert body["username"] == "ann@example.com"
    assert body["admin"] is True
    assert body["exp"] - body["iat"] == 86_400
    assert {"sub", "iss", "jti"} <= body.keys()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_admin_claim_comes_from_the_user_record(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        token = login(client, "BOB@example.com", "bob-password-1").text
        assert client.post("/validate", headers=bearer(token)).json()["admin"] is False


@pytest.mark.parametrize(
    ("user", "password"),
    [("ann@example.com", "wrong-password"), ("nobody@example.com", "ann-password-1")],
)
def test_wrong_password_and_unknown_user_get_the_same_401(
    auth_service: AuthService, user: str, password: str
) -> None:
    with auth_service.client() as client:
        response = login(client, user, password)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid credentials"}
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Missing credentials"),
        ({"Authorization": "Bearer abc"}, "scheme must be Basic"),
        ({"Authorization": "Basic %%%"}, "not valid base64"),
        ({"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}, "username:password"),
    ],
)
def test_missing_or_malformed_basic_is_401(
    auth_service: AuthService, headers: dict[str, str], detail: str
) -> None:
    with auth_service.client() as client:
        response = client.post("/login", headers=headers)
    assert response.status_code == 401
    assert detail in response.json()["detail"]


def test_repeated_failures_are_slowed_down_then_released(auth_service: AuthService) -> None:
    limit = auth_service.settings.LOGIN_MAX_FAILURES
    with auth_service.client() as client:
        for _ in range(limit):
            assert login(client, "bob@example.com", "guess").status_code == 401
        blocked = login(client, "bob@example.com", "bob-password-1")
        assert blocked.status_code == 429
        wait = int(blocked.headers["retry-after"])
        assert 1 <= wait <= auth_service.settings.LOGIN_FAILURE_WINDOW_SECONDS
        assert "Too many failed logins" in blocked.json()["detail"]
        assert login(client, "ann@example.com", "ann-password-1").status_code == 200
        time.sleep(wait)
        assert login(client, "bob@example.com", "bob-password-1").status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic YW5uOng=", "Token abc", "bearer a b", "Bearer\tx"],
)
def test_validate_without_a_bearer_credential_is_401(auth_service: AuthService, header: str | None) -> None:
    line = b"X-None: 1" if header is None else b"Authorization: " + header.encode()
    assert raw_request(auth_service.url, line) == 401


def test_validate_401_names_the_bearer_scheme(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        response = client.post("/validate", headers={"Authorization": "Basic YW5uOng="})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "scheme must be Bearer" in response.json()["detail"]


def forged_tokens(settings_secret: str, issuer: str) -> dict[str, str]:
    good = TokenSigner(secret=settings_secret, issuer=issuer)
    claims = good.verify(good.issue(user_id=1, username="ann@example.com", admin=False))

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    header, _, signature = good.issue(user_id=1, username="ann@example.com", admin=False).split(".")
    return {
        "garbage": "aaa.bbb.ccc",
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 10}, settings_secret, "HS256"),
        "other key": TokenSigner(secret="k" * 40, issuer=issuer).issue(
            user_id=1, username="ann@example.com", admin=True
        ),
        "tampered": f"{header}.{part({**claims, 'admin': True})}.{signature}",
        "alg none": f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({**claims, 'admin': True})}.",
        "HS512": jwt.encode(claims, settings_secret * 2, "HS512"),
    }


@pytest.mark.parametrize("kind", ["garbage", "expired", "other key", "tampered", "alg none", "HS512"])
def test_invalid_tokens_are_403(auth_service: AuthService, kind: str) -> None:
    secret = auth_service.settings.jwt_secret()
    token = forged_tokens(secret, auth_service.settings.JWT_ISSUER)[kind]
    with auth_service.client() as client:
        response = client.post("/validate", headers=bearer(token))
    assert response.status_code == 403, response.text
    assert response.json()["detail"].startswith("Not authorized")


def raw_request(url: str, header_line: bytes) -> int | None:
    """Send one request with a raw header line; the status answered (None: connection reset)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            + header_line
            + b"\r\nConnection: close\r\n\r\n"
        )
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            # The server may cut a request it refuses to read; what it said first still counts.
            pass
    return int(reply.split(b" ", 2)[1]) if reply else None


@pytest.mark.parametrize(
    ("header_line", "expected"),
    [
        ("Authorization: Bearer é.ü.ñ".encode("latin-1"), 403),
        ("Authorization: Béarer x".encode("latin-1"), 401),
        (b"Authorization: Bearer \xff\xfe\xfd", 403),
        (b"Authorization: Bearer " + b"a" * 8000, 403),
    ],
)
def test_odd_headers_never_give_a_500(auth_service: AuthService, header_line: bytes, expected: int) -> None:
    assert raw_request(auth_service.url, header_line) == expected


def test_huge_header_is_refused_and_the_server_keeps_serving(auth_service: AuthService) -> None:
    status = raw_request(auth_service.url, b"Authorization: Bearer " + b"a." * 200_000)
    assert status in (400, 431, None)
    assert raw_request(auth_service.url, b"Authorization: Bearer a.b.c") == 403


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.binary(max_size=300).filter(
        lambda b: all(c not in b for c in (0, 10, 13)) and b.strip() == b and b"," not in b
    )
)
def test_no_authorization_value_gives_a_500(auth_service: AuthService, value: bytes) -> None:
    status = raw_request(auth_service.url, b"Authorization: " + value)
    assert status in (400, 401, 403), (value, status)


def test_plaintext_password_is_stored_nowhere(auth_service: AuthService) -> None:
    engine = build_engine(auth_service.settings.database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM user")).all()
    engine.dispose()
    dump = repr(rows)
    assert len(rows) == len(USERS)
    for password, _admin in USERS.values():
        assert password not in dump
    assert dump.count("$argon2id$") == len(USERS)
