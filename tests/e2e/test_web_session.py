"""The page's HTTP contract against `alchemist up`: cookie sessions, CSRF on every state-changing
route, security headers on every kind of response, and signed download links."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from alchemist.links import DownloadLinks
from tests.e2e.conftest import Up
from tests.media import write_media

UNSAFE_ROUTES = [
    ("POST", "/upload"),
    ("DELETE", "/api/v1/jobs/0123456789abcdef0123456789abcdef"),
    ("POST", "/api/v1/users"),
    ("DELETE", "/api/v1/users/someone@example.com"),
    ("PUT", "/api/v1/users/someone@example.com/password"),
    ("DELETE", "/api/v1/session"),
]


def sign_in(up: Up, email: str, password: str) -> tuple[httpx.Client, str]:
    """A browser-like client holding the session cookie, and its CSRF token."""
    client = httpx.Client(base_url=up.url, timeout=60)
    answer = client.post("/api/v1/session", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return client, str(answer.json()["csrf_token"])


@pytest.fixture(scope="module")
def admin(up: Up) -> Iterator[tuple[httpx.Client, str]]:
    client, csrf = sign_in(up, "admin@alchemist.local", up.password)
    yield client, csrf
    client.close()


@pytest.fixture(scope="module")
def other(up: Up, admin: tuple[httpx.Client, str]) -> Iterator[tuple[httpx.Client, str]]:
    client, csrf = admin
    made = client.post("/api/v1/users", json={"email": "other@example.com", "password": "other-password-1"},
                       headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert made.status_code == 201, made.text
    second, second_csrf = sign_in(up, "other@example.com", "other-password-1")
    yield second, second_csrf
    second.close()


def upload_with(client: httpx.Client, path: Path, headers: dict[str, str]) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post("/upload", files={"file": (path.name, handle, "video/mp4")}, headers=headers)


def wait_done(client: httpx.Client, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_the_session_cookie_is_httponly_samesite_and_secure_behind_https(up: Up) -> None:
    plain = httpx.post(
        f"{up.url}/api/v1/session", json={"email": "admin@alchemist.local", "password": up.password}
    )
    cookie = plain.headers["set-cookie"].lower()
    assert "alchemist_session=" in cookie
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http on loopback: a Secure cookie would never come back
    assert plain.json()["username"] == "admin@alchemist.local"
    assert "alchemist_session" not in plain.text  # the token is not handed to page scripts
    # The gateway trusts X-Forwarded-Proto from TRUSTED_PROXIES (loopback by default), as from an ingress.
    credentials = {"email": "admin@alchemist.local", "password": up.password}
    proxied = httpx.post(f"{up.url}/api/v1/session", json=credentials, headers={"X-Forwarded-Proto": "https"})
    assert "secure" in proxied.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"email": "admin@alchemist.local", "password": "wrong password"}, 401),
        ({"email": "nobody@example.com", "password": "whatever-123"}, 401),
        ({"email": "admin@alchemist.local"}, 422),
        ({"email": "a", "password": "b", "extra": 1}, 422),
        ([1, 2], 422),
    ],
)
def test_a_failed_sign_in_says_why_and_sets_no_cookie(up: Up, body: object, status: int) -> None:
    answer = httpx.post(f"{up.url}/api/v1/session", json=body, timeout=30)
    assert answer.status_code == status
    assert isinstance(answer.json()["detail"], str) and answer.json()["detail"]
    assert "set-cookie" not in answer.headers


@pytest.mark.parametrize(("method", "path"), UNSAFE_ROUTES)
def test_every_state_changing_route_needs_the_csrf_token_with_a_cookie(
    up: Up, admin: tuple[httpx.Client, str], other: tuple[httpx.Client, str], method: str, path: str
) -> None:
    client, _ = admin
    _, foreign_token = other
    for headers in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": foreign_token}):
        answer = client.request(method, path, headers=headers)
        assert answer.status_code == 403, (method, path, headers, answer.text)
        assert "X-CSRF-Token" in answer.json()["detail"]


def test_bearer_callers_need_no_csrf_token_and_the_cookie_reads_freely(
    up: Up, admin: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    clip = write_media(tmp_path / "clip.mp4", seconds=1)
    bearer = httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {up.token}"}, timeout=60)
    with bearer:
        accepted = upload_with(bearer, clip, {})
    assert accepted.status_code == 202
    assert accepted.headers["location"] == f"/api/v1/jobs/{accepted.json()['job_id']}"
    client, _ = admin
    assert client.get("/api/v1/session").json()["admin"] is True
    assert client.get(accepted.headers["location"]).status_code == 200


def test_a_signed_in_browser_uploads_follows_and_signs_out(up: Up, tmp_path: Path) -> None:
    client, csrf = sign_in(up, "admin@alchemist.local", up.password)
    try:
        accepted = upload_with(client, write_media(tmp_path / "a.mp4", seconds=1), {"X-CSRF-Token": csrf})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        with client.stream("GET", "/api/v1/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            seen = ""
            for line in events.iter_lines():
                seen += line + "\n"
                if job_id in line and '"status":"done"' in line:
                    break
        assert f'"id":"{job_id}"' in seen
        out = client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204
        assert (
            'alchemist_session=""' in out.headers["set-cookie"]
            or "max-age=0" in out.headers["set-cookie"].lower()
        )
        assert client.get("/api/v1/jobs").status_code == 401  # the cookie is gone from this browser
    finally:
        client.close()


def test_lists_are_paged_newest_first(up: Up, other: tuple[httpx.Client, str], tmp_path: Path) -> None:
    client, csrf = other
    ids = []
    for name in ("first", "second", "third"):
        answer = upload_with(client, write_media(tmp_path / f"{name}.mp4", seconds=1), {"X-CSRF-Token": csrf})
        ids.append(answer.json()["job_id"])
    page = client.get("/api/v1/jobs", params={"limit": 2}).json()
    assert page["total"] >= 3 and page["limit"] == 2 and page["offset"] == 0
    assert [job["id"] for job in page["jobs"]] == ids[::-1][:2]
    rest = client.get("/api/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert rest["jobs"][0]["id"] == ids[0]
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
        answer = client.get("/api/v1/jobs", params=bad)
        assert answer.status_code == 422 and isinstance(answer.json()["detail"], str), bad


def test_a_second_user_sees_none_of_the_first_users_jobs(
    up: Up, admin: tuple[httpx.Client, str], other: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    client, csrf = admin
    job_id = upload_with(
        client, write_media(tmp_path / "mine.mp4", seconds=1), {"X-CSRF-Token": csrf}
    ).json()["job_id"]
    job = wait_done(client, job_id)
    stranger, stranger_csrf = other
    assert job_id not in stranger.get("/api/v1/jobs", params={"limit": 100, "all": True}).text
    for method, path in (("GET", f"/api/v1/jobs/{job_id}"), ("GET", f"/api/v1/jobs/{job_id}/download"),
                         ("GET", f"/api/v1/jobs/{job_id}/events"), ("DELETE", f"/api/v1/jobs/{job_id}"),
                         ("GET", f"/download?fid={job['mp3_fid']}")):  # fmt: skip
        answer = stranger.request(method, path, headers={"X-CSRF-Token": stranger_csrf})
        assert answer.status_code == 404, (method, path)
    assert stranger.get("/api/v1/users").status_code == 403


def test_the_download_link_works_without_credentials_until_the_job_is_deleted(
    up: Up, admin: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    client, csrf = admin
    first = upload_with(client, write_media(tmp_path / "one.mp4", seconds=2), {"X-CSRF-Token": csrf}).json()[
        "job_id"
    ]
    second = upload_with(client, write_media(tmp_path / "two.mp4", seconds=1), {"X-CSRF-Token": csrf}).json()[
        "job_id"
    ]
    link = str(wait_done(client, first)["download_url"])
    other_link = str(wait_done(client, second)["download_url"])
    assert link.startswith(f"{up.url}/api/v1/jobs/{first}/download?")

    fetched = httpx.get(link)  # a browser or mail client: no header, no cookie
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "audio/mpeg"
    assert fetched.content[:3] == b"ID3" and 'filename="one.mp3"' in fetched.headers["content-disposition"]
    ranged = httpx.get(link, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and len(ranged.content) == 10

    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    other_query = {k: v[0] for k, v in parse_qs(urlsplit(other_link).query).items()}
    base = f"{up.url}/api/v1/jobs/{first}/download"
    forged = [
        {**query, "signature": query["signature"][:-1] + ("0" if query["signature"][-1] != "0" else "1")},
        {**query, "expires": str(int(query["expires"]) + 3600)},  # a longer life is a new signature
        other_query,  # another job's valid signature
        {"expires": query["expires"]},
        {"signature": query["signature"]},
        {**query, "signature": "é" * 10},
    ]
    for params in forged:
        answer = httpx.get(base, params=params)
        assert answer.status_code == 403, params
        assert "link" in answer.json()["detail"]
    expired = DownloadLinks(up.jwt_secret, 60, clock=lambda: time.time() - 30 * 86_400)
    stale = expired.url(up.url, first, str(wait_done(client, first)["mp3_fid"]))
    answer = httpx.get(stale)
    assert answer.status_code == 403 and "expired" in answer.json()["detail"]
    assert httpx.get(f"{base}?expires=abc&signature=x").status_code == 422

    assert client.delete(f"/api/v1/jobs/{first}", headers={"X-CSRF-Token": csrf}).status_code == 204
    gone = httpx.get(link)
    assert gone.status_code == 404 and "detail" in gone.json()


def test_the_email_carries_the_download_link(up: Up, admin: tuple[httpx.Client, str], tmp_path: Path) -> None:
    client, csrf = admin
    job_id = upload_with(
        client, write_media(tmp_path / "mail.mp4", seconds=1), {"X-CSRF-Token": csrf}
    ).json()["job_id"]
    wait_done(client, job_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mails = [p.read_text() for p in (up.data_dir / "outbox").glob("*.eml")]
        found = [m for m in mails if f"X-Alchemist-Job: {job_id}" in m]
        if found:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no email")
    (mail,) = found
    link = next(line for line in mail.splitlines() if "/download?expires=" in line).strip()
    assert httpx.get(link).status_code == 200
    assert "Message-ID: <job-" in mail and "Date: " in mail


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/static/app.css"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/options"),
        ("GET", "/no/such/page"),
        ("PATCH", "/upload"),
        ("GET", "/api/v1/jobs?limit=x"),
        ("POST", "/login"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/static/../../etc/passwd"),
    ],
)
def test_every_response_carries_the_security_headers_and_no_server_banner(
    up: Up, method: str, path: str
) -> None:
    answer = httpx.request(method, f"{up.url}{path}", timeout=30)
    assert answer.status_code < 500
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "server" not in answer.headers


def test_the_page_and_its_assets_come_from_the_gateway(up: Up) -> None:
    page = httpx.get(f"{up.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>" not in page.text and " on" + "click=" not in page.text and "style=" not in page.text
    for asset in ("/static/app.js", "/static/app.css", "/static/swagger/swagger-ui-bundle.js"):
        assert httpx.get(f"{up.url}{asset}").status_code == 200, asset
    docs = httpx.get(f"{up.url}/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
