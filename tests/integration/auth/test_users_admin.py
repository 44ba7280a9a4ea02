"""Admins manage users over the auth service's HTTP API, on SQLite and on the real MariaDB."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy.orm import sessionmaker

from alchemist.auth.passwords import PasswordVault
from alchemist.auth.users import UserError, add_user, list_users, remove_user
from alchemist.db.engine import build_engine, transaction
from alchemist.tokens import TokenSigner

from .conftest import AuthService

ANN = ("ann@example.com", "ann-password-1")  # admin
BOB = ("bob@example.com", "bob-password-1")
ENDPOINTS = [
    ("GET", "/users", None),
    ("POST", "/users", {"email": "carl@example.com", "password": "carl-password-1"}),
    ("DELETE", "/users/bob@example.com", None),
    ("PUT", "/users/bob@example.com/password", {"password": "a new password"}),
]


def login(client: httpx.Client, user: tuple[str, str]) -> httpx.Response:
    return client.post("/login", auth=user)


def bearer(client: httpx.Client, user: tuple[str, str]) -> dict[str, str]:
    response = login(client, user)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.text}"}


def emails(client: httpx.Client, headers: dict[str, str]) -> list[str]:
    response = client.get("/users", headers=headers)
    assert response.status_code == 200, response.text
    return [user["email"] for user in response.json()["users"]]


def path_of(email: str) -> str:
    return f"/users/{quote(email, safe='')}"


def test_admin_lists_users_oldest_first_with_utc_timestamps(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        response = client.get("/users", headers=bearer(client, ANN))
    assert response.status_code == 200
    users = response.json()["users"]
    assert [(user["email"], user["admin"]) for user in users] == [(ANN[0], True), (BOB[0], False)]
    for user in users:
        assert set(user) == {"email", "admin", "created_at"}
        assert user["created_at"].endswith("+00:00")
        created = datetime.fromisoformat(user["created_at"])
        assert abs(datetime.now(timezone.utc) - created) < timedelta(minutes=5)


def test_admin_adds_users_who_can_log_in(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        added = client.post(
            "/users", headers=admin, json={"email": " Carl@Example.com ", "password": "carl-password-1"}
        )
        assert added.status_code == 201, added.text
        assert added.json()["email"] == "carl@example.com"
        assert added.json()["admin"] is False
        assert added.json()["created_at"].endswith("+00:00")
        made_admin = client.post(
            "/users",
            headers=admin,
            json={"email": "dora@example.com", "password": "dora pw 1", "admin": True},
        )
        assert (made_admin.status_code, made_admin.json()["admin"]) == (201, True)
        assert emails(client, admin) == [ANN[0], BOB[0], "carl@example.com", "dora@example.com"]
        carl = client.post("/validate", headers=bearer(client, ("carl@example.com", "carl-password-1")))
        assert carl.json()["admin"] is False
        dora = client.post("/validate", headers=bearer(client, ("dora@example.com", "dora pw 1")))
        assert dora.json()["admin"] is True


REFUSED_ADDITIONS = [
    ({"email": "ANN@example.com", "password": "long enough"}, 409, "user ann@example.com already exists"),
    ({"email": "carl@example.com", "password": "short"}, 400, "password must be at least 8 characters"),
    ({"email": "not-an-email", "password": "long enough"}, 400, "'not-an-email' is not an email address"),
    ({"email": "", "password": "long enough"}, 400, "'' is not an email address"),
]


def test_refused_additions_say_why(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        for body, status, detail in REFUSED_ADDITIONS:
            response = client.post("/users", headers=admin, json=body)
            assert (response.status_code, response.json()) == (status, {"detail": detail})
        assert emails(client, admin) == [ANN[0], BOB[0]]


def test_admin_removes_a_user_who_then_cannot_log_in(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        removed = client.delete("/users/BOB@example.com", headers=admin)
        assert (removed.status_code, removed.content) == (204, b"")
        assert emails(client, admin) == [ANN[0]]
        assert login(client, BOB).status_code == 401
        again = client.delete("/users/bob@example.com", headers=admin)
    assert (again.status_code, again.json()) == (404, {"detail": "no user bob@example.com"})


def test_unknown_users_are_404(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        removed = client.delete("/users/nobody@example.com", headers=admin)
        reset = client.put(
            "/users/nobody@example.com/password", headers=admin, json={"password": "long enough"}
        )
    assert (removed.status_code, removed.json()) == (404, {"detail": "no user nobody@example.com"})
    assert (reset.status_code, reset.json()) == (404, {"detail": "no user nobody@example.com"})


def test_an_admin_cannot_remove_themself(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        for spelling in ("ann@example.com", "ANN@Example.com", "%20ann@example.com"):
            response = client.delete(f"/users/{spelling}", headers=admin)
            refused = (response.status_code, response.json())
            assert refused == (400, {"detail": "you cannot remove your own account"}), spelling
        assert emails(client, admin) == [ANN[0], BOB[0]]


def test_a_removed_admins_token_stops_working_at_once(auth_service: AuthService) -> None:
    carl = ("carl@example.com", "carl-password-1")
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        client.post("/users", headers=admin, json={"email": carl[0], "password": carl[1], "admin": True})
        carl_token = bearer(client, carl)
        assert client.get("/users", headers=carl_token).status_code == 200
        assert client.delete("/users/carl@example.com", headers=admin).status_code == 204
        refused = client.get("/users", headers=carl_token)
        # Refused before the admin check: the token of a removed account is revoked.
        assert (refused.status_code, refused.json()) == (
            403,
            {"detail": "Not authorized: Token has been revoked (the account no longer exists)"},
        )
        # The record decides, not the token: added again as a plain user, carl stays out.
        client.post("/users", headers=admin, json={"email": carl[0], "password": carl[1]})
        assert client.delete("/users/ann@example.com", headers=carl_token).status_code == 403
        assert emails(client, admin) == [ANN[0], BOB[0], carl[0]]


def test_the_last_admin_is_never_removed(auth_service: AuthService) -> None:
    engine = build_engine(auth_service.settings.database_url)
    sessions = sessionmaker(engine)
    try:
        with (
            pytest.raises(UserError, match=r"ann@example\.com is the last admin"),
            transaction(sessions) as session,
        ):
            remove_user(session, "ann@example.com", keep_an_admin=True)
        with transaction(sessions) as session:
            remove_user(session, "bob@example.com", keep_an_admin=True)
            add_user(session, PasswordVault(), "carl@example.com", "carl-password-1", admin=True)
        with transaction(sessions) as session:
            remove_user(session, "ann@example.com", keep_an_admin=True)
        with transaction(sessions) as session:
            assert [(user.email, user.is_admin) for user in list_users(session)] == [
                ("carl@example.com", True)
            ]
    finally:
        engine.dispose()


def remove_each_other(
    service: AuthService, first: tuple[str, str], second: tuple[str, str]
) -> dict[str, int]:
    """Both admins ask, at the same moment, to remove the other; the status each one got."""
    with service.client() as client:
        tokens = {first[0]: bearer(client, first), second[0]: bearer(client, second)}
    statuses: dict[str, int] = {}
    start = threading.Barrier(2)

    def remove(caller: str, target: str) -> None:
        with service.client() as client:
            start.wait()
            statuses[caller] = client.delete(path_of(target), headers=tokens[caller]).status_code

    threads = [
        threading.Thread(target=remove, args=(first[0], second[0])),
        threading.Thread(target=remove, args=(second[0], first[0])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def test_two_admins_removing_each_other_at_once_leave_one(auth_service: AuthService) -> None:
    survivor = ANN
    with auth_service.client() as client:
        for round_ in range(4):
            other = (f"admin{round_}@example.com", "admin-password")
            new = {"email": other[0], "password": other[1], "admin": True}
            assert client.post("/users", headers=bearer(client, survivor), json=new).status_code == 201
            statuses = remove_each_other(auth_service, survivor, other)
            # The loser was either gone already (403) or would have removed the last admin (400).
            assert sorted(statuses.values()) in ([204, 400], [204, 403]), statuses
            survivor = survivor if statuses[survivor[0]] == 204 else other
            users = client.get("/users", headers=bearer(client, survivor)).json()["users"]
            assert [user["email"] for user in users if user["admin"]] == [survivor[0]]


def test_password_reset_replaces_the_old_password(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        reset = client.put(
            "/users/Bob@Example.com/password", headers=admin, json={"password": "bob new pw 2"}
        )
        assert (reset.status_code, reset.content) == (204, b"")
        assert login(client, BOB).status_code == 401
        assert login(client, (BOB[0], "bob new pw 2")).status_code == 200
        short = client.put("/users/bob@example.com/password", headers=admin, json={"password": "short"})
        assert (short.status_code, short.json()) == (
            400,
            {"detail": "password must be at least 8 characters"},
        )
        assert login(client, (BOB[0], "bob new pw 2")).status_code == 200


def test_an_email_with_a_slash_is_reached_through_percent_encoding(auth_service: AuthService) -> None:
    odd = "a/b?c#d@example.com"
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        assert (
            client.post("/users", headers=admin, json={"email": odd, "password": "odd password"}).status_code
            == 201
        )
        reset = client.put(f"{path_of(odd)}/password", headers=admin, json={"password": "odd password 2"})
        assert reset.status_code == 204
        assert login(client, (odd, "odd password 2")).status_code == 200
        assert client.delete(path_of(odd), headers=admin).status_code == 204
        assert emails(client, admin) == [ANN[0], BOB[0]]


def test_without_a_bearer_token_every_endpoint_is_401(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        for method, path, body in ENDPOINTS:
            for header in (None, "", "Basic YW5uOng=", "Bearer", "Token abc"):
                headers = {} if header is None else {"Authorization": header}
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, header)
                assert response.headers["www-authenticate"] == 'Bearer realm="alchemist"'
                assert isinstance(response.json()["detail"], str)
        assert emails(client, bearer(client, ANN)) == [ANN[0], BOB[0]]


def bad_tokens(service: AuthService) -> dict[str, str]:
    """Tokens that claim ann is an admin but must not be believed."""
    secret, issuer = service.settings.jwt_secret(), service.settings.JWT_ISSUER
    good = TokenSigner(secret=secret, issuer=issuer)
    claims = good.verify(good.issue(user_id=1, username=ANN[0], admin=True))

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return {
        "garbage": "aaa.bbb.ccc",
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 10}, secret, "HS256"),
        "other key": TokenSigner(secret="k" * 40, issuer=issuer).issue(
            user_id=1, username=ANN[0], admin=True
        ),
        "other issuer": TokenSigner(secret=secret, issuer="someone-else").issue(
            user_id=1, username=ANN[0], admin=True
        ),
        "alg none": f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.",
    }


def test_invalid_tokens_and_non_admins_are_403(auth_service: AuthService) -> None:
    secret, issuer = auth_service.settings.jwt_secret(), auth_service.settings.JWT_ISSUER
    # Validly signed, but bob is no admin in the database whatever the token says.
    bob_as_admin = TokenSigner(secret=secret, issuer=issuer).issue(user_id=2, username=BOB[0], admin=True)
    with auth_service.client() as client:
        non_admins = [bearer(client, BOB), {"Authorization": f"Bearer {bob_as_admin}"}]
        for method, path, body in ENDPOINTS:
            for kind, token in bad_tokens(auth_service).items():
                headers = {"Authorization": f"Bearer {token}"}
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 403, (method, path, kind, response.text)
                assert response.json()["detail"].startswith("Not authorized: "), kind
            for headers in non_admins:
                response = client.request(method, path, json=body, headers=headers)
                assert (response.status_code, response.json()) == (403, {"detail": "admins only"})
        assert emails(client, bearer(client, ANN)) == [ANN[0], BOB[0]]
        assert login(client, BOB).status_code == 200


NEW = ("POST", "/users")
RESET = ("PUT", "/users/bob@example.com/password")
HUGE = b"b" * 2_000_000
MALFORMED = [
    (NEW, b"{not json", "the body is not valid JSON: Expecting property name"),
    (NEW, b"", "body: Field required"),
    (NEW, b"null", "body: Input should be a valid dictionary"),
    (NEW, b"[]", "body: Input should be a valid dictionary"),
    (NEW, b'"ann@example.com"', "body: Input should be a valid dictionary"),
    (NEW, b'{"email": "carl@example.com"}', "body.password: Field required"),
    (NEW, b'{"email": 5, "password": "long enough"}', "body.email: Input should be a valid string"),
    (NEW, b'{"email": "c@x.io", "password": 12345678}', "body.password: Input should be a valid string"),
    (NEW, b'{"email": "c@x.io", "password": "long enough", "admin": "yes"}', "body.admin: Input should be"),
    (NEW, b'{"email": "c@x.io", "password": "long enough", "admin": 1}', "body.admin: Input should be"),
    (NEW, b'{"email": "c@x.io", "password": "long enough", "role": "x"}', "body.role: Extra inputs"),
    (NEW, b'{"email": "c@x.io", "password": "' + HUGE + b'"}', "at most 1024 characters"),
    (NEW, b'{"email": "' + HUGE + b'@x.io", "password": "long enough"}', "at most 255 characters"),
    (NEW, b'{"email": "c@x.io", "password": "\xff\xfe long enough"}', "error parsing the body"),
    (NEW, b"[" * 100_000 + b"]" * 100_000, "error parsing the body"),
    (RESET, b"password=long+enough", "body: Input should be a valid dictionary"),
    (RESET, b"{}", "body.password: Field required"),
    (RESET, b'{"password": null}', "body.password: Input should be a valid string"),
    (RESET, b'{"password": "long enough", "old": "x"}', "body.old: Extra inputs"),
    (RESET, b'{"password": ["long enough"]}', "body.password: Input should be a valid string"),
]


def test_malformed_bodies_are_4xx_with_a_sentence(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        admin = bearer(client, ANN)
        for (method, path), content, detail in MALFORMED:
            form = content.startswith(b"password=")
            kind = "application/x-www-form-urlencoded" if form else "application/json"
            response = client.request(method, path, content=content, headers={**admin, "Content-Type": kind})
            case = content[:60]
            assert 400 <= response.status_code < 500, (case, response.text[:300])
            assert set(response.json()) == {"detail"}, case
            assert detail in response.json()["detail"], (case, response.json())
            assert "long enough" not in response.json()["detail"], case  # the input is never echoed
        assert emails(client, admin) == [ANN[0], BOB[0]]
        assert login(client, BOB).status_code == 200


@pytest.fixture
def ann_headers(auth_service: AuthService) -> dict[str, str]:
    """Ann's token, fetched once for a test (hypothesis calls its test many times)."""
    with auth_service.client() as client:
        return bearer(client, ANN)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "email": st.text(max_size=30) | JSON_VALUES,
            "password": st.text(max_size=30) | JSON_VALUES,
            "admin": st.booleans() | JSON_VALUES,
        },
    )
    | JSON_VALUES
)
def test_no_json_body_gives_a_500(
    auth_service: AuthService, ann_headers: dict[str, str], body: object
) -> None:
    with auth_service.client() as client:
        added = client.post("/users", headers=ann_headers, json=body)
        reset = client.put("/users/bob@example.com/password", headers=ann_headers, json=body)
    assert added.status_code in (201, 400, 409, 422), added.text
    assert reset.status_code in (204, 400, 422), reset.text
    for refused in (answer for answer in (added, reset) if answer.status_code >= 400):
        assert isinstance(refused.json()["detail"], str)


def test_the_openapi_document_describes_the_user_routes(auth_service: AuthService) -> None:
    with auth_service.client() as client:
        document = client.get("/openapi.json")
    assert document.status_code == 200
    paths = document.json()["paths"]
    assert set(paths["/users"]) == {"get", "post"}
    assert set(paths["/users/{email}"]) == {"delete"}
    assert set(paths["/users/{email}/password"]) == {"put"}
