"""The gateway's OpenAPI document as a contract: schemathesis fuzzes every operation of a real
`alchemist up` without credentials, as an admin and as a user, and checks each answer against it."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AnyHttpUrl, TypeAdapter, ValidationError
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import free_port, running
from tests.media import write_media

ADMIN = "admin@alchemist.local"
USER = "contract-user@example.com"
SPARE = "contract-spare@example.com"
PASSWORD = "contract password 1"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Small runs: the whole module must stay well under two minutes on two cores. Sign-in and
# account routes run argon2 (~0.7 s a password) for every well-formed body, so they get few.
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": 20},
        "request-timeout": 15,
        "operations": [
            {"include-operation-id": ["sign_in", "login"], "generation": {"max-examples": 4}},
            {"include-operation-id": ["add_user", "reset_password"], "generation": {"max-examples": 8}},
        ],
    }
)
FUZZ_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# FastAPI's default ids glue the path and method on: `list_jobs_api_v1_jobs_get`.
GENERATED_ID = re.compile(r"api_v1|_(get|post|put|patch|delete)$")
# These take credentials in the request itself (HTTP Basic, a JSON form), not a token.
SIGN_IN = ("login", "sign_in")
AnyCase = Case[Any]  # schemathesis types a case by its operation's parameter classes
HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)


@dataclass(frozen=True)
class Up:
    """The running gateway and what the fuzz runs need from it."""

    url: str
    admin_token: str
    user_token: str
    job_id: str
    document: dict[str, Any]
    # Connections to this loopback port are refused: webhooks of fuzzed uploads go nowhere.
    dead_hook: str


def bearer(token: str) -> dict[str, str]:
    """The header that authenticates scripts."""
    return {"Authorization": f"Bearer {token}"}


def login(url: str, email: str, password: str) -> str:
    """A JWT for this account, from POST /login with HTTP Basic."""
    answer = httpx.post(f"{url}/login", auth=(email, password), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.text.strip()


def seed_job(url: str, token: str, clip: Path) -> str:
    """Upload a short clip and wait until it is converted; its id."""
    with clip.open("rb") as handle:
        answer = httpx.post(
            f"{url}/upload",
            files={"file": (clip.name, handle, "video/mp4")},
            headers=bearer(token),
            timeout=60,
        )
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=bearer(token)).json()["status"]
        if status == "done":
            return job_id
        assert status != "failed"
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`alchemist up` on a free port, with an admin, a user and one done job of the user."""
    tmp = tmp_path_factory.mktemp("contract")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "JWT_", "SMTP_", "AMQP"))}
    env["ALCHEMIST_DATA_DIR"] = str(tmp / "data")
    url = f"http://127.0.0.1:{port}"
    log = tmp / "up.log"
    with running(["up", "--host", "127.0.0.1", "--port", str(port)], env, f"{url}/readyz", log):
        password = log.read_text().split("with password ")[1].split()[0]
        admin_token = login(url, ADMIN, password)
        for email in (USER, SPARE):
            added = httpx.post(
                f"{url}/api/v1/users",
                json={"email": email, "password": PASSWORD},
                headers=bearer(admin_token),
            )
            assert added.status_code == 201, added.text
        user_token = login(url, USER, PASSWORD)
        job_id = seed_job(url, user_token, write_media(tmp / "seed.mp4", seconds=1))
        document = httpx.get(f"{url}/openapi.json").json()
        yield Up(url, admin_token, user_token, job_id, document, f"http://127.0.0.1:{free_port()}/hook")


@pytest.fixture(scope="module")
def api(up: Up) -> schemathesis.BaseSchema:
    """The gateway's own OpenAPI document, loaded by schemathesis from the running process."""
    return schemathesis.openapi.from_url(f"{up.url}/openapi.json", config=CONFIG)


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """Lazy schemas of schemathesis 4.32 read `Function._nodeid`, which pytest 9 dropped for `_id`."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _email(value: object) -> str:
    return str(value).strip().lower()


def steer(case: AnyCase, up: Up) -> None:
    """Keep the fuzzer off what the runs depend on and off the network, nothing more."""
    key = (case.method.upper(), case.path)
    params = case.path_parameters if case.path_parameters is not None else {}
    if key in (("DELETE", "/api/v1/users/{email}"), ("PUT", "/api/v1/users/{email}/password")):
        # The accounts whose tokens the runs use stay; a spare account takes the blow.
        if _email(params.get("email")) in (ADMIN, USER):
            params["email"] = SPARE
    elif key == ("DELETE", "/api/v1/jobs/{job_id}") and params.get("job_id") == up.job_id:
        params["job_id"] = "not-the-seeded-job"  # the stream and download tests read it
    elif key == ("POST", "/upload") and isinstance(case.body, dict):
        # A webhook the gateway accepts would be called by the notification service: never
        # let a fuzzed upload make this machine call some host on the internet.
        hook = case.body.get("webhook_url")
        if isinstance(hook, str):
            try:
                HTTP_URL.validate_python(hook)
            except ValidationError:
                pass
            else:
                case.body["webhook_url"] = up.dead_hook


def call_and_check(case: AnyCase, up: Up, headers: dict[str, str]) -> None:
    """Send the case (with these credentials) and run every contract check on the answer."""
    steer(case, up)
    case.call_and_validate(headers=headers, checks=CHECKS)


schema = schemathesis.pytest.from_fixture("api")
# The two event streams never end on their own (the live list keeps the connection open
# for good): they are checked by test_event_streams_match_the_document with a short read.
fuzzed = schema.exclude(operation_id=["watch_jobs", "job_events"])


@fuzzed.parametrize()
@FUZZ_SETTINGS
def test_every_operation_without_credentials(case: AnyCase, up: Up) -> None:
    """No token (or a garbage one the fuzzer makes up): documented 401s and 403s, never a 5xx."""
    call_and_check(case, up, {})


@fuzzed.parametrize()
@FUZZ_SETTINGS
def test_every_operation_as_an_admin(case: AnyCase, up: Up) -> None:
    """An admin's Bearer token: every answer is documented and matches its schema."""
    call_and_check(case, up, bearer(up.admin_token))


@fuzzed.parametrize()
@FUZZ_SETTINGS
def test_every_operation_as_a_user(case: AnyCase, up: Up) -> None:
    """A normal user's Bearer token: admin routes refuse with a documented 403."""
    call_and_check(case, up, bearer(up.user_token))


def documented(up: Up, method: str, path: str, status: int) -> list[str]:
    """The media types the document gives for this answer."""
    answer = up.document["paths"][path][method.lower()]["responses"][str(status)]
    return list(answer.get("content", {}))


def expect(case: AnyCase, headers: dict[str, str], status: int) -> None:
    """Send one hand-made case: this status, and an answer the document describes."""
    response = case.call(headers=headers, timeout=30)
    assert response.status_code == status, (case.method, case.formatted_path, case.query, response.text)
    case.validate_response(response, checks=CHECKS, headers=headers)


def test_event_streams_match_the_document(up: Up, api: schemathesis.BaseSchema) -> None:
    """Both event routes answer text/event-stream when allowed and documented JSON errors when not."""
    job_events = api["/api/v1/jobs/{job_id}/events"]["GET"]
    seeded = {"job_id": up.job_id}
    # A done job's stream ends after its last state, so it can be read whole and validated.
    expect(job_events.Case(path_parameters=seeded), bearer(up.user_token), 200)
    expect(job_events.Case(path_parameters=seeded), bearer(up.admin_token), 200)
    expect(job_events.Case(path_parameters={"job_id": "no-such-job"}), bearer(up.user_token), 404)
    expect(job_events.Case(path_parameters=seeded), {}, 401)
    expect(job_events.Case(path_parameters=seeded), {"Authorization": "Bearer a.b.c"}, 403)
    watch = api["/api/v1/events"]["GET"]
    expect(watch.Case(), {}, 401)
    expect(watch.Case(query={"all": "true"}), {"Authorization": "Bearer a.b.c"}, 403)
    # The live list never ends: read its first event, then hang up.
    with httpx.stream("GET", f"{up.url}/api/v1/events", headers=bearer(up.user_token), timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].split(";")[0] in documented(up, "GET", "/api/v1/events", 200)
        assert next(stream.iter_text()).startswith("retry:")


def test_downloads_match_the_document(up: Up, api: schemathesis.BaseSchema) -> None:
    """The MP3 routes answer audio/mpeg (whole or a range) and documented errors otherwise."""
    job = httpx.get(f"{up.url}/api/v1/jobs/{up.job_id}", headers=bearer(up.user_token)).json()
    user, admin = bearer(up.user_token), bearer(up.admin_token)
    by_fid = api["/download"]["GET"]
    fid = {"fid": job["mp3_fid"]}
    expect(by_fid.Case(query=fid), user, 200)
    expect(by_fid.Case(query=fid), admin, 200)
    expect(by_fid.Case(query=fid), {**user, "Range": "bytes=0-99"}, 206)
    expect(by_fid.Case(query=fid), {**user, "Range": "bytes=999999999-"}, 416)
    expect(by_fid.Case(query={"fid": "no-such-fid"}), user, 404)
    expect(by_fid.Case(query=fid), {}, 401)
    by_job = api["/api/v1/jobs/{job_id}/download"]["GET"]
    seeded = {"job_id": up.job_id}
    signed = dict(httpx.URL(job["download_url"]).params)
    expect(by_job.Case(path_parameters=seeded), user, 200)
    expect(by_job.Case(path_parameters=seeded, query=signed), {}, 200)  # the link needs no header
    expect(by_job.Case(path_parameters=seeded, query={**signed, "signature": "0" * 64}), {}, 403)
    expect(by_job.Case(path_parameters=seeded), {}, 401)
    expect(by_job.Case(path_parameters={"job_id": "no-such-job"}), user, 404)


def test_destructive_admin_operations_on_throwaway_data(up: Up, api: schemathesis.BaseSchema) -> None:
    """Adding, resetting and removing a user answer as documented (on an account made for it)."""
    admin = bearer(up.admin_token)
    add, remove = api["/api/v1/users"]["POST"], api["/api/v1/users/{email}"]["DELETE"]
    reset = api["/api/v1/users/{email}/password"]["PUT"]
    email = {"email": "contract-throwaway@example.com"}
    expect(add.Case(body={**email, "password": PASSWORD}), admin, 201)
    expect(add.Case(body={**email, "password": PASSWORD}), admin, 409)
    expect(add.Case(body={"email": "not an email", "password": PASSWORD}), admin, 400)
    expect(reset.Case(path_parameters=email, body={"password": "another password"}), admin, 204)
    expect(remove.Case(path_parameters=email), admin, 204)
    expect(remove.Case(path_parameters=email), admin, 404)
    expect(reset.Case(path_parameters=email, body={"password": "another password"}), admin, 404)
    expect(remove.Case(path_parameters={"email": ADMIN}), admin, 400)  # never yourself
    expect(remove.Case(path_parameters=email), bearer(up.user_token), 403)


def test_the_cookie_session_matches_the_document(up: Up, api: schemathesis.BaseSchema) -> None:
    """The page's session: sign in, read it, a write needs X-CSRF-Token, sign out."""
    account: dict[str, Any] = {"email": "contract-cookie@example.com", "password": PASSWORD}
    added = httpx.post(f"{up.url}/api/v1/users", json=account, headers=bearer(up.admin_token))
    assert added.status_code == 201, added.text
    response = httpx.post(f"{up.url}/api/v1/session", json=account)
    assert response.status_code == 200, response.text
    api["/api/v1/session"]["POST"].Case(body=account).validate_response(response, checks=CHECKS)
    cookie = {"Cookie": f"alchemist_session={response.cookies['alchemist_session']}"}
    csrf = {**cookie, "X-CSRF-Token": response.json()["csrf_token"]}
    expect(api["/api/v1/session"]["GET"].Case(), cookie, 200)
    expect(api["/api/v1/jobs"]["GET"].Case(), cookie, 200)
    delete_job = api["/api/v1/jobs/{job_id}"]["DELETE"]
    expect(delete_job.Case(path_parameters={"job_id": "no-such-job"}), cookie, 403)  # no CSRF token
    expect(delete_job.Case(path_parameters={"job_id": "no-such-job"}), csrf, 404)
    expect(api["/api/v1/session"]["DELETE"].Case(), cookie, 403)
    expect(api["/api/v1/session"]["DELETE"].Case(), csrf, 204)


def operations(up: Up) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) for every operation in the document."""
    for path, item in up.document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_the_document_describes_itself(up: Up) -> None:
    """Ids, summaries, errors, media types, security and types are what /docs needs to be useful."""
    document = up.document
    schemes = document["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["HTTPBearer"].items()
    assert {"type": "apiKey", "in": "cookie", "name": "alchemist_session"}.items() <= schemes[
        "APIKeyCookie"
    ].items()
    error_out = document["components"]["schemas"]["ErrorOut"]
    assert error_out["required"] == ["detail"]
    assert error_out["properties"]["detail"]["type"] == "string"
    ids = []
    for method, path, operation in operations(up):
        where = f"{method} {path}"
        ids.append(operation["operationId"])
        assert SNAKE_CASE.match(operation["operationId"]), where
        assert not GENERATED_ID.search(operation["operationId"]), where
        assert operation.get("summary") and operation.get("description"), where
        responses = operation["responses"]
        for status, answer in responses.items():
            if status.startswith(("4", "5")) and "content" in answer:
                # Every error body the gateway sends is {"detail": "<sentence>"}.
                for media in answer["content"].values():
                    assert media["schema"] == {"$ref": "#/components/schemas/ErrorOut"}, (where, status)
        if "401" in responses and operation["operationId"] not in SIGN_IN:
            # Whatever reads the Bearer token or the cookie says so, for /docs' Authorize button.
            assert {"HTTPBearer": []} in operation.get("security", []), where
            assert {"APIKeyCookie": []} in operation.get("security", []), where
        if "security" in operation or operation["operationId"] in SIGN_IN:
            assert any(s.startswith("4") and "content" in a for s, a in responses.items()), where
        if method == "DELETE":
            assert "204" in responses and "content" not in responses["204"], where
    assert len(ids) == len(set(ids))
    paths = document["paths"]
    for path in ("/download", "/api/v1/jobs/{job_id}/download"):
        assert list(paths[path]["get"]["responses"]["200"]["content"]) == ["audio/mpeg"]
    for path in ("/api/v1/events", "/api/v1/jobs/{job_id}/events"):
        assert list(paths[path]["get"]["responses"]["200"]["content"]) == ["text/event-stream"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == [CONTENT_TYPE_LATEST]
    upload = paths["/upload"]["post"]["requestBody"]
    assert upload["required"] is True
    form = upload["content"]["multipart/form-data"]["schema"]
    assert (form["properties"]["file"]["type"], form["properties"]["file"]["format"]) == ("string", "binary")
    assert "webhook_url" in form["properties"]
    assert form["required"] == ["file"]
    for name, field in (("Job", "created_at"), ("Job", "updated_at"), ("User", "created_at"),
                        ("SessionOut", "expires_at")):  # fmt: skip
        typed = document["components"]["schemas"][name]["properties"][field]
        variants = [v for v in typed.get("anyOf", [typed]) if v.get("type") != "null"]
        assert [(v.get("type"), v.get("format")) for v in variants] == [("string", "date-time")], name
