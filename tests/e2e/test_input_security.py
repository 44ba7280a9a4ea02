"""Every input door of the gateway against the real servers: `alchemist up`, and auth, gateway,
converters and notification as separate processes on MariaDB, RabbitMQ and SMTP.

One test per class of hostile input (issue 11, "Inputs"), each with many inputs: headers, Range,
field lengths, multipart caps, file names, media duration; then Hypothesis over headers, form
fields and file names. Whatever comes in, the answer is never a 5xx and a refused upload leaves
no blob behind.
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import psutil
import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alchemist.config import Settings
from alchemist.filenames import MAX_FILENAME_BYTES, sanitize_filename
from alchemist.gateway.multipart import (
    MAX_FIELD_BYTES,
    MAX_NON_FILE_BYTES,
    MAX_PART_HEADER_BYTES,
    MAX_PART_HEADERS,
    MAX_PARTS,
)
from tests.e2e import rawhttp
from tests.e2e.conftest import ANN, UPLOAD_LIMIT, Up, free_port, running
from tests.e2e.rawhttp import Header, RawResponse
from tests.e2e.stack import Stack, stored_blobs
from tests.media import Audio, write_lying_matroska, write_lying_mp3, write_media

MIB = 1 << 20


@dataclass
class Target:
    """A running stack as these tests see it: where it is, a token, and where it keeps things."""

    name: str
    url: str
    token: str
    data_dir: Path
    max_upload: int
    referenced_videos: Callable[[], set[str]]
    emails_of: Callable[[str], list[EmailMessage]]

    @property
    def bearer(self) -> Header:
        return (b"Authorization", b"Bearer " + self.token.encode())

    def gateway(self) -> psutil.Process:
        """The process listening on the gateway's port (the whole of `alchemist up`)."""
        port = urlsplit(self.url).port
        for connection in psutil.net_connections("tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
                assert connection.pid is not None
                return psutil.Process(connection.pid)
        raise AssertionError(f"nothing listens on {self.url}")

    def orphans(self) -> set[str]:
        """Blobs in videos/ that no job refers to, and temp files left (jobs read first: a
        converter deletes a source before it forgets it, never the other way round)."""
        referenced = self.referenced_videos()
        videos = self.data_dir / "videos"
        temp = (
            {p.name for p in (videos / ".incoming").glob("*")} if (videos / ".incoming").exists() else set()
        )
        return (stored_blobs(videos) - referenced) | temp

    def job(self, job_id: str) -> dict[str, object]:
        answer = httpx.get(
            f"{self.url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {self.token}"}
        )
        answer.raise_for_status()
        return dict(answer.json())

    def wait_finished(self, job_id: str, timeout: float = 120) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {self.job(job_id)}")

    def upload(self, parts: Sequence[tuple[bytes, bytes | None, bytes]]) -> RawResponse:
        content_type, body = rawhttp.multipart(parts)
        return rawhttp.request(self.url, "POST", "/upload", [self.bearer, content_type], body)


def outbox_emails(data_dir: Path) -> Callable[[str], list[EmailMessage]]:
    """The embedded default's mail: one .eml file per message in the data dir's outbox."""

    def emails_of(job_id: str) -> list[EmailMessage]:
        found = []
        for path in sorted((data_dir / "outbox").glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["X-Alchemist-Job"] == job_id:
                found.append(message)
        return found  # type: ignore[return-value]

    return emails_of


def sqlite_videos(data_dir: Path) -> Callable[[], set[str]]:
    def referenced() -> set[str]:
        with sqlite3.connect(f"file:{data_dir / 'alchemist.db'}?mode=ro", uri=True) as connection:
            rows = connection.execute("SELECT video_fid FROM job WHERE video_fid IS NOT NULL").fetchall()
        return {row[0] for row in rows}

    return referenced


def mariadb_videos(env: dict[str, str]) -> Callable[[], set[str]]:
    def referenced() -> set[str]:
        connection = pymysql.connect(
            host=env["MYSQL_HOST"],
            port=int(env["MYSQL_PORT"]),
            user=env["MYSQL_USER"],
            database=env["MYSQL_DB"],
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT video_fid FROM job WHERE video_fid IS NOT NULL")
                return {row[0] for row in cursor.fetchall()}
        finally:
            connection.close()

    return referenced


def target_of_up(up: Up) -> Target:
    default_limit = int(Settings.model_fields["MAX_UPLOAD_BYTES"].default)
    return Target("up", up.url, up.token, up.data_dir, default_limit, sqlite_videos(up.data_dir),
                  outbox_emails(up.data_dir))  # fmt: skip


@pytest.fixture(
    scope="module",
    params=["up", pytest.param("distributed", marks=[pytest.mark.mariadb, pytest.mark.rabbitmq])],
)
def target(request: pytest.FixtureRequest) -> Target:
    """Each stack in turn; its token is taken before any test sends a bad password."""
    if request.param == "up":
        return target_of_up(request.getfixturevalue("up"))
    stack: Stack = request.getfixturevalue("distributed")
    assert stack.mail is not None
    return Target("distributed", stack.url, stack.login(*ANN), stack.data_dir, UPLOAD_LIMIT,
                  mariadb_videos(stack.env), stack.mail.for_job)  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 1 s H.264 + AAC video."""
    return write_media(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=1).read_bytes()


@dataclass
class DoneJob:
    """A converted upload to aim downloads at."""

    id: str
    fid: str
    mp3: bytes
    download_url: str


@pytest.fixture(scope="module")
def done(target: Target, clip: bytes) -> DoneJob:
    answer = target.upload([(b"file", b"done.mp4", clip)])
    assert answer.status == 202, answer.body
    job_id = str(httpx.Response(200, content=answer.body).json()["job_id"])
    job = target.wait_finished(job_id)
    assert job["status"] == "done", job
    mp3 = httpx.get(f"{target.url}/download", params={"fid": job["mp3_fid"]},
                    headers={"Authorization": f"Bearer {target.token}"}).content  # fmt: skip
    return DoneJob(job_id, str(job["mp3_fid"]), mp3, str(job["download_url"]))


def json_of(response: RawResponse) -> dict[str, object]:
    return dict(httpx.Response(response.status, content=response.body).json())


# --- 1. Headers -----------------------------------------------------------------------------

ROUTES = [
    ("POST", "/login"), ("GET", "/api/v1/session"), ("POST", "/api/v1/session"),
    ("DELETE", "/api/v1/session"), ("POST", "/upload"), ("GET", "/api/v1/options"),
    ("GET", "/download?fid={fid}"), ("GET", "/api/v1/jobs/{job}/download"),
    ("GET", "/api/v1/jobs/{job}/download?expires=1&signature=00"), ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{job}"), ("GET", "/api/v1/jobs/{job}/events"), ("GET", "/api/v1/events"),
    ("DELETE", "/api/v1/jobs/0123456789abcdef0123456789abcdef"), ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"), ("DELETE", "/api/v1/users/nobody@example.com"),
    ("PUT", "/api/v1/users/nobody@example.com/password"), ("GET", "/healthz"), ("GET", "/readyz"),
    ("GET", "/api/v1/features"), ("GET", "/metrics"), ("GET", "/"), ("GET", "/docs"),
    ("GET", "/openapi.json"), ("GET", "/static/app.js"), ("GET", "/no/such/route"),
]  # fmt: skip
HEADER_NAMES = [
    b"Cookie", b"Range", b"If-Range", b"Content-Type", b"X-CSRF-Token", b"Host", b"X-Forwarded-For",
    b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Forwarded", b"Accept", b"Accept-Encoding",
    b"Accept-Language", b"If-None-Match", b"If-Modified-Since", b"Origin", b"Referer", b"User-Agent",
    b"Expect", b"X-Anything",
]  # fmt: skip
HOSTILE_VALUES = [
    b"", b" ", b"\xff\xfe\x80", "café ☕".encode(), "\u202eevil".encode(), b"\x00", b"a\x01b", b"\x1b[31m",
    b"\x7f", b"tab\there", b"=;,\"\\", b"[", b"[::1", b"]:x", b"-1", b"9" * 5000, b"x" * 8192, b"y" * 70_000,
    b"alchemist_session=\xff; alchemist_session=a.b.c",
]  # fmt: skip


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def authorizations(token: bytes) -> list[bytes]:
    """Bad Authorization values: broken Basic, other schemes, a good token mangled."""
    return [
        b"Basic", b"Basic ", b"Basic !!!!", b"Basic " + b64(b"\xff\xfe:\x80"), b"Basic " + b64(b"no-colon"),
        b"Basic " + b64(b"nobody@example.com:wrong"), b"Basic " + b64("n\u00f6body@example.com:w".encode()),
        b"Basic " + b64(b"a" * 3000 + b":b"), b"Basic \xff\xfe", b"Digest username=x", b"Negotiate \xff",
        b"Bearer", b"Bearer ", b"Bearer a.b.c", b"Bearer " + token + b"\xff", b"bearer " + token,
        b"BEARER " + token, b"Bearer  " + token, b"Bearer " + token + b" extra", token,
        b"Bearer \xe2\x80\xae" + token, b"Bearer " + b"a" * 8000,
    ]  # fmt: skip


def header_sets(target: Target) -> list[list[Header]]:
    """Each set of headers a request carries: one hostile header (with a good token, so the
    route's own code reads it), a bad Authorization, duplicates, and broken framing."""
    sets = [[target.bearer, (name, value)] for name in HEADER_NAMES for value in HOSTILE_VALUES]
    sets += [[(b"Authorization", value)] for value in authorizations(target.token.encode())]
    sets += [[(b"Authorization", value)] for value in HOSTILE_VALUES]
    good, bad = target.bearer, (b"Authorization", b"Basic " + b64(b"nobody@example.com:x"))
    sets += [
        [good, bad], [bad, good], [good, good],
        [good, (b"Host", b"a.example"), (b"Host", b"\xff")],
        [good, (b"Cookie", b"a=1"), (b"Cookie", b"alchemist_session=\xff")],
        [good, (b"Range", b"bytes=0-1"), (b"Range", b"bytes=" + b"9" * 5000 + b"-")],
        [good, (b"Content-Type", b"multipart/form-data; boundary=a"), (b"Content-Type", b"application/json")],
        [good, (b"X-CSRF-Token", b"a"), (b"X-CSRF-Token", b"\xff")],
        [good, (b"X-Forwarded-For", b"203.0.113.9"), (b"X-Forwarded-For", b"\xff, [::1")],
        [good, (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Proto", b"javascript")],
        [good, (b"Content-Length", b"0"), (b"Content-Length", b"0")],
        # Framing h11 must refuse before any route runs.
        [good, (b"Content-Length", b"abc")], [good, (b"Content-Length", b"-1")],
        [good, (b"Content-Length", b"9" * 5000)], [good, (b"Content-Length", b"\xb2")],
        [good, (b"Content-Length", b"1"), (b"Content-Length", b"2")],
        [good, (b"Transfer-Encoding", b"gzip")], [good, (b"Transfer-Encoding", b"\xff")],
        [good, (b"Transfer-Encoding", b"gzip, chunked, identity")],
    ]  # fmt: skip
    return sets


def test_no_header_and_no_byte_in_one_makes_a_5xx_on_any_route(target: Target, done: DoneJob) -> None:
    routes = [(method, path.format(job=done.id, fid=done.fid)) for method, path in ROUTES]
    cases = [(method, path, headers) for method, path in routes for headers in header_sets(target)]
    # A host header replaced entirely, too (the ones above come after our own Host).
    cases += [(method, path, [target.bearer]) for method, path in routes]

    def send(case: tuple[str, str, list[Header]]) -> tuple[int, str, str, list[Header]]:
        method, path, headers = case
        hosts = [value for name, value in headers if name == b"Host"]
        others = [(name, value) for name, value in headers if name != b"Host"]
        answer = rawhttp.request(target.url, method, path, others + [(b"Host", h) for h in hosts[1:]],
                                 host=hosts[0] if hosts else b"127.0.0.1", timeout=30)  # fmt: skip
        return answer.status, method, path, headers

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, cases))
    wrong = [
        (status, method, path, [(name, value[:40]) for name, value in headers])
        for status, method, path, headers in results
        if status == 0 or status >= 500
    ]
    assert not wrong, f"{len(wrong)} of {len(results)} requests got no answer or a 5xx: {wrong[:20]}"
    assert len(results) > 10_000
    assert target.orphans() == set()


def test_a_bad_authorization_on_login_is_auth_s_4xx_through_the_gateway(target: Target) -> None:
    for value in authorizations(b"x.y.z"):
        answer = rawhttp.request(target.url, "POST", "/login", [(b"Authorization", value)])
        assert answer.status in (400, 401, 429), (value[:40], answer.status, answer.body)
        assert "detail" in json_of(answer)


# --- 2. Range -------------------------------------------------------------------------------


def range_values(size: int) -> list[bytes]:
    many = "9" * 5000
    texts = [
        "bytes=0-99", "bytes=100-", "bytes=-100", "bytes=0-0", f"bytes={size - 1}-", f"bytes={size}-",
        f"bytes=-{size}", f"bytes=-{size + 1}", f"bytes=0-{many}", f"bytes={many}-", f"bytes=-{many}",
        f"bytes={many}-{many}", f"bytes={'0' * 5000}1-2", "bytes=99999999999999999999-", "bytes=-1-5",
        "bytes=--5", "bytes=-0", "bytes=5-1", "bytes=0-1,5-6", "bytes=0-1, 2-3", "bytes=abc", "bytes=",
        "bytes", "items=0-5", "bytes=1.5-2", "bytes=+1-2", "BYTES=0-5", "bytes= 0-5", "bytes=0 -5", "=",
    ]  # fmt: skip
    return [text.encode() for text in texts] + [
        "bytes=\u0663-\u0665".encode(),
        b"bytes=\xb2-\xb3",
        b"\xff\xfe",
    ]


def test_any_range_is_200_206_or_416(target: Target, done: DoneJob) -> None:
    size = len(done.mp3)
    signed = urlsplit(done.download_url)
    urls = [
        (f"/download?fid={done.fid}", [target.bearer]),
        (f"/api/v1/jobs/{done.id}/download", [target.bearer]),
        (f"{signed.path}?{signed.query}", []),  # the signed link: no credentials at all
    ]
    for path, auth in urls:
        for value in range_values(size):
            answer = rawhttp.request(target.url, "GET", path, [*auth, (b"Range", value)])
            shown = (path, value[:30], answer.status)
            assert answer.status in (200, 206, 416), shown
            if answer.status == 200:
                assert answer.body == done.mp3, shown
            elif answer.status == 206:
                unit, _, span = (answer.header("content-range") or "").partition(" ")
                first, last = (int(n) for n in span.split("/")[0].split("-"))
                assert unit == "bytes" and span.endswith(f"/{size}"), shown
                assert answer.body == done.mp3[first : last + 1], shown
            else:
                assert answer.header("content-range") == f"bytes */{size}", shown


# --- 3. Lengths -----------------------------------------------------------------------------


def test_every_field_is_length_checked_before_the_database(target: Target, clip: bytes) -> None:
    def refused(parts: list[tuple[bytes, bytes | None, bytes]], naming: str) -> None:
        answer = target.upload(parts)
        assert answer.status == 400, (naming, answer.status, answer.body[:300])
        assert naming in str(json_of(answer)["detail"]), answer.body[:300]
        assert target.orphans() == set()

    file = (b"file", b"clip.mp4", clip)
    # Within the 4096-byte field, but percent-encoding makes it 6019 characters: past the column.
    refused([file, (b"webhook_url", None, b"https://example.com/" + "é".encode() * 1000)], "webhook_url")
    refused([file, (b"webhook_url", None, b"https://example.com/" + b"a" * 2100)], "webhook_url")
    refused([file, (b"webhook_url", None, b"https://example.com/" + b"a" * 5000)], "'webhook_url' is longer")
    refused([(b"webhook_url", None, b"h" * 100_000), file], "'webhook_url' is longer")
    refused([file, (b"n" * 5000, None, b"1")], "unknown field 'nnnn")
    refused([file, (b"webhook_url", None, b"https://a.example/"), (b"webhook_url", None, b"x")], "twice")
    bearer = {"Authorization": f"Bearer {target.token}"}
    # JSON bodies, paths and queries: FastAPI's 422 names the parameter (body.email, path.job_id...).
    too_long: list[tuple[str, str, object]] = [
        ("POST", "/api/v1/session", {"email": "a" * 300 + "@example.com", "password": "x"}),
        ("POST", "/api/v1/session", {"email": "a@example.com", "password": "p" * 2000}),
        ("POST", "/api/v1/users", {"email": "a" * 300 + "@example.com", "password": "x" * 20}),
        ("PUT", f"/api/v1/users/{'a' * 300}@example.com/password", {"password": "p" * 2000}),
        ("GET", f"/download?fid={'f' * 65}", None),
        ("GET", f"/api/v1/jobs/{'j' * 10_000}", None),
        ("GET", f"/api/v1/jobs/{'j' * 10_000}/download", None),
        ("DELETE", f"/api/v1/jobs/{'j' * 10_000}", None),
        ("GET", f"/api/v1/jobs/x/download?expires=1&signature={'s' * 200}", None),
        ("GET", f"/api/v1/jobs/x/download?expires={'9' * 5000}&signature=s", None),
        ("GET", f"/api/v1/jobs?limit={'9' * 5000}", None),
    ]
    for method, path, body in too_long:
        answer = httpx.request(method, f"{target.url}{path}", headers=bearer, json=body, timeout=30)
        assert 400 <= answer.status_code < 500, (method, path[:60], answer.status_code, answer.text[:200])
        assert answer.json()["detail"], answer.text
    # Odd text that fits: it reaches auth and its database (MariaDB's utf8mb4), and is refused there.
    odd = [b'{"email": "a\\u0000b@example.com", "password": "x"}', b'{"email": "\\ud800@x", "password": "x"}',
           '{"email": "😀@example.com", "password": "x"}'.encode(), b'{"email": "\xff\xfe", "password": "x"}',
           b'{"email": "a@example.com", "password": "' + b"p" * 1024 + b'"}', b"[" * 100_000]  # fmt: skip
    for body in odd:
        answer = httpx.post(f"{target.url}/api/v1/session", content=body, timeout=30,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        assert 400 <= answer.status_code < 500, (body[:40], answer.status_code, answer.text[:200])


# --- 4. Multipart caps ----------------------------------------------------------------------

# Whatever the body, the parser holds at most one read chunk (uvicorn reads 64 KiB at a time)
# and its events, MAX_PARTS fields of MAX_FIELD_BYTES and one part's headers: 256 KiB. The bound
# allows 8 times that for copies and the allocator's arenas, plus 2 MiB for the request's own
# life: 4 MiB. Before the caps, 200,000 fields grew the process by 50-70 MiB.
HELD_AT_MOST = 64 * 1024 + MAX_PARTS * MAX_FIELD_BYTES + MAX_PART_HEADERS * MAX_PART_HEADER_BYTES
RSS_GROWTH_BOUND = 8 * HELD_AT_MOST + 2 * MIB


def tiny_fields(count: int) -> Iterator[bytes]:
    """`count` one-byte fields, then a file, in 8 KiB chunks."""
    buffer = b""
    for index in range(count):
        buffer += b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % index
        if len(buffer) >= 8192:
            yield buffer
            buffer = b""
    yield (
        buffer
        + b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\nabc\r\n--B--\r\n'
    )


def chunked_upload(target: Target, chunks: Iterator[bytes]) -> tuple[RawResponse, int]:
    headers = [target.bearer, (b"Content-Type", b"multipart/form-data; boundary=B")]
    return rawhttp.stream(target.url, "/upload", headers, chunks)


def test_200000_tiny_fields_in_a_chunked_upload_are_refused_without_memory_growth(target: Target) -> None:
    gateway = target.gateway()
    chunked_upload(target, tiny_fields(1_000))  # warm up: the route's code paths and buffers
    before = gateway.memory_info().rss
    answer, sent = chunked_upload(target, tiny_fields(200_000))
    time.sleep(0.5)
    grown = gateway.memory_info().rss - before
    print(
        f"{target.name}: RSS {before / MIB:.1f} MiB -> grew {grown / MIB:+.2f} MiB; client sent {sent} bytes"
    )
    assert answer.status == 400, answer
    assert json_of(answer)["detail"] == f"too many parts: at most {MAX_PARTS} fields and files"
    assert answer.header("connection") == "close"  # the rest of the body is not read
    assert grown < RSS_GROWTH_BOUND, f"grew {grown / MIB:.2f} MiB (bound {RSS_GROWTH_BOUND / MIB:.2f} MiB)"
    assert target.orphans() == set()


def test_every_form_cap_is_a_4xx_as_the_stream_arrives_and_stores_nothing(
    target: Target, clip: bytes
) -> None:
    def part(name: bytes, data: bytes, *, filename: bytes | None = None, extra: bytes = b"") -> bytes:
        disposition = (
            b'form-data; name="' + name + b'"' + (b'; filename="' + filename + b'"' if filename else b"")
        )
        return b"--B\r\nContent-Disposition: " + disposition + b"\r\n" + extra + b"\r\n" + data + b"\r\n"

    def repeated(piece: bytes, times: int) -> Iterator[bytes]:
        for _ in range(times):
            yield piece

    cases: dict[str, tuple[Iterator[bytes], int, str]] = {
        "one long field": (
            iter([part(b"webhook_url", b"", extra=b"")[:-2], *repeated(b"h" * 65536, 200)]),
            400, f"field 'webhook_url' is longer than {MAX_FIELD_BYTES} bytes",
        ),
        "many full fields": (
            (part(b"f%d" % i, b"v" * MAX_FIELD_BYTES) for i in range(MAX_PARTS - 1)),
            400, f"take more than {MAX_NON_FILE_BYTES} bytes",
        ),
        "leading junk": (repeated(b"\r\n" * 32768, 300), 400, f"take more than {MAX_NON_FILE_BYTES} bytes"),
        "a header line past its cap": (
            iter([part(b"a", b"1", extra=b"X-Pad: " + b"p" * (MAX_PART_HEADER_BYTES + 10) + b"\r\n")]),
            400, "Maximum header size exceeded",
        ),
        "too many part headers": (
            iter([part(b"a", b"1", extra=b"X-Pad: p\r\n" * MAX_PART_HEADERS)]),
            400, "malformed multipart body",
        ),
        "a second file": (
            iter([part(b"file", clip, filename=b"a.mp4"), part(b"file", clip, filename=b"b.mp4")]),
            400, "exactly one file",
        ),
    }  # fmt: skip
    if target.max_upload <= 64 * MIB:  # a file past the limit, with no Content-Length to warn us
        over = target.max_upload // 65536 + 2
        cases["a file past the limit"] = (
            iter([part(b"file", b"", filename=b"big.mp4")[:-2], *repeated(os.urandom(65536), over)]),
            413, f"the file is larger than the limit of {target.max_upload} bytes",
        )  # fmt: skip
    for name, (chunks, status, detail) in cases.items():
        answer, _ = chunked_upload(target, chunks)
        assert answer.status == status, (name, answer.status, answer.body[:300])
        assert detail in str(json_of(answer)["detail"]), (name, answer.body[:300])
        assert target.orphans() == set(), name
    # Said up front: refused before a byte of the body is read.
    declared = [target.bearer, (b"Content-Type", b"multipart/form-data; boundary=B"),
                (b"Content-Length", str(target.max_upload + MAX_NON_FILE_BYTES + 1).encode())]  # fmt: skip
    answer = rawhttp.request(target.url, "POST", "/upload", declared, timeout=30)
    assert answer.status == 413 and answer.header("connection") == "close", answer


# --- 5. File names --------------------------------------------------------------------------

HOSTILE_NAMES = {
    b"line\nfeed.mp4": "line feed.mp4",
    b"nul\x00byte.mp4": "nulbyte.mp4",
    b"Subject: hi\nBcc: mallory@example.com.mp4": "Subject: hi Bcc: mallory@example.com.mp4",
    b"../../../etc/passwd.mp4": "passwd.mp4",
    b"C:\\Users\\ann\\clip.mp4": "clip.mp4",
    "\u202eevil\u202cgpj.mp4".encode(): "evilgpj.mp4",
    b"tab\tand\x1b[31mcolour\x7f.mp4": "tab and[31mcolour.mp4",
    ("x" * 1000 + ".mp4").encode(): "x" * (MAX_FILENAME_BYTES - 4) + ".mp4",
    ("😀" * 300 + ".mp4").encode(): "😀" * ((MAX_FILENAME_BYTES - 4) // 4) + ".mp4",
    "über \u2028clip 🎵.mp4".encode(): "über clip 🎵.mp4",
    b"\x00\n\x01": "upload",
}


def disposition_name(header: str) -> str:
    """The file name a Content-Disposition gives (its UTF-8 filename*), checking it is one line."""
    assert all(0x20 <= ord(char) < 0x7F for char in header), header
    assert header.startswith('attachment; filename="'), header
    return unquote(header.split("filename*=UTF-8''", 1)[1], errors="strict")


def test_hostile_file_names_convert_are_emailed_once_and_download(target: Target, clip: bytes) -> None:
    jobs: dict[str, str] = {}
    for raw, expected in HOSTILE_NAMES.items():
        answer = target.upload([(b"file", raw, clip)])
        assert answer.status == 202, (raw[:40], answer.body)
        jobs[str(json_of(answer)["job_id"])] = expected
    for job_id, expected in jobs.items():
        job = target.wait_finished(job_id)
        assert job["status"] == "done" and job["filename"] == expected, job
        download = httpx.get(f"{target.url}/api/v1/jobs/{job_id}/download",
                             headers={"Authorization": f"Bearer {target.token}"})  # fmt: skip
        assert download.status_code == 200 and download.content[:3] in (b"ID3", b"\xff\xfb")
        stem = expected.rsplit(".", 1)[0] if "." in expected else expected
        assert disposition_name(download.headers["content-disposition"]) == f"{stem}.mp3"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(target.emails_of(job_id) for job_id in jobs):
        time.sleep(0.2)
    time.sleep(2)  # a second email, if there were one, would have come by now
    for job_id, expected in jobs.items():
        emails = target.emails_of(job_id)
        assert len(emails) == 1, (expected, len(emails))
        assert emails[0]["Subject"] == f"Your MP3 is ready: {expected}"
        assert emails[0]["Bcc"] is None
        assert expected in emails[0].get_content()


# --- 6. Duration ----------------------------------------------------------------------------

SHORT_LIMIT = 5


@pytest.fixture(scope="module")
def short_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """`alchemist up` whose media may last MAX_MEDIA_SECONDS=5."""
    tmp = tmp_path_factory.mktemp("short-up")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "JWT_", "SMTP_", "AMQP"))}
    env.update(ALCHEMIST_DATA_DIR=str(tmp / "data"), MAX_MEDIA_SECONDS=str(SHORT_LIMIT))
    url = f"http://127.0.0.1:{port}"
    with running(["up", "--host", "127.0.0.1", "--port", str(port)], env, f"{url}/readyz", tmp / "up.log"):
        password = (tmp / "up.log").read_text().split("with password ")[1].split()[0]
        token = httpx.post(f"{url}/login", auth=("admin@alchemist.local", password)).text
        yield target_of_up(Up(url, token, tmp / "data", "", password))


def test_media_longer_than_its_header_says_fails_as_too_long(short_up: Target, tmp_path: Path) -> None:
    uploads = {
        "liar.mp3": write_lying_mp3(tmp_path / "liar.mp3", claimed=2, actual=12),  # the copy path
        "liar.mkv": write_lying_matroska(tmp_path / "liar.mkv", claimed=2, actual=12),  # the ffmpeg path
        "honest.mp3": write_media(
            tmp_path / "honest.mp3", seconds=4, video=None, container="mp3", audio=(Audio("libmp3lame"),)
        ),
    }
    jobs = {}
    for name, path in uploads.items():
        answer = short_up.upload([(b"file", name.encode(), path.read_bytes())])
        assert answer.status == 202, answer.body
        jobs[name] = str(json_of(answer)["job_id"])
    for name in ("liar.mp3", "liar.mkv"):
        job = short_up.wait_finished(jobs[name])
        assert job["status"] == "failed" and job["mp3_fid"] is None, job
        assert job["error"] == f"the media lasts longer than the maximum of {SHORT_LIMIT} s", job
    honest = short_up.wait_finished(jobs["honest.mp3"])
    assert honest["status"] == "done" and abs(float(honest["duration"]) - 4) < 0.2, honest  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(short_up.emails_of(j) for j in jobs.values()):
        time.sleep(0.2)
    failed = short_up.emails_of(jobs["liar.mp3"])
    assert len(failed) == 1 and failed[0]["Subject"] == "Conversion failed: liar.mp3"
    assert f"longer than the maximum of {SHORT_LIMIT} s" in failed[0].get_content()
    assert short_up.orphans() == set()


# --- 7. Hypothesis over the real `alchemist up` ---------------------------------------------


@pytest.fixture(scope="module")
def up_target(up: Up) -> Target:
    return target_of_up(up)


HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
NO_LINE_BREAK = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
HEADER_NAME = st.one_of(
    st.sampled_from([b"Authorization", *HEADER_NAMES]),
    st.from_regex(rb"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,40}\Z"),
    st.binary(min_size=1, max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)
ROUTE = st.sampled_from([(m, p) for m, p in ROUTES if "{" not in p and "events" not in p])


def settled(target: Target, answer: RawResponse) -> None:
    """No 5xx; a refused request left nothing in the video store."""
    assert 0 < answer.status < 500, answer
    if answer.status != 202:
        assert target.orphans() == set()


@HYPOTHESIS
@given(
    route=ROUTE, headers=st.lists(st.tuples(HEADER_NAME, NO_LINE_BREAK), max_size=6), signed_in=st.booleans()
)
def test_hypothesis_any_headers(
    up_target: Target, route: tuple[str, str], headers: list[Header], signed_in: bool
) -> None:
    method, path = route
    sent = [up_target.bearer, *headers] if signed_in else headers
    settled(up_target, rawhttp.request(up_target.url, method, path, sent, timeout=30))


FIELD_NAME = st.one_of(st.sampled_from([b"webhook_url", b"file", b"title"]), st.binary(max_size=80))
FIELD_VALUE = st.one_of(st.binary(max_size=200), st.integers(0, 6000).map(lambda n: b"v" * n))


@HYPOTHESIS
@given(
    fields=st.lists(st.tuples(FIELD_NAME, FIELD_VALUE), max_size=40),
    filename=st.one_of(st.none(), st.binary(max_size=400)),
    data=st.sampled_from([b"", b"not a video", b"\x00" * 5000]),
    chunked=st.booleans(),
)
def test_hypothesis_any_form_fields(
    up_target: Target, fields: list[tuple[bytes, bytes]], filename: bytes | None, data: bytes, chunked: bool
) -> None:
    parts: list[tuple[bytes, bytes | None, bytes]] = [(name, None, value) for name, value in fields]
    if filename is not None:
        parts.insert(len(parts) // 2, (b"file", filename, data))
    content_type, body = rawhttp.multipart(parts)
    headers = [up_target.bearer, content_type]
    if chunked:
        answer, _ = rawhttp.stream(
            up_target.url, "/upload", headers, (body[i : i + 999] for i in range(0, len(body), 999))
        )
    else:
        answer = rawhttp.request(up_target.url, "POST", "/upload", headers, body)
    settled(up_target, answer)
    if answer.status == 202:
        stored = str(up_target.job(str(json_of(answer)["job_id"]))["filename"])
        assert stored == sanitize_filename(stored) and len(stored.encode()) <= MAX_FILENAME_BYTES


@HYPOTHESIS
@given(name=st.text(max_size=300))
def test_hypothesis_any_file_name(up_target: Target, name: str) -> None:
    raw = name.encode("utf-8", "surrogatepass")
    answer = up_target.upload([(b"file", raw, b"not a video, only its name matters")])
    settled(up_target, answer)
    if answer.status == 202:
        stored = str(up_target.job(str(json_of(answer)["job_id"]))["filename"])
        assert stored == sanitize_filename(stored) and len(stored.encode()) <= MAX_FILENAME_BYTES
        if not any(char in name for char in '"\\\r;'):  # what the part header's syntax leaves alone
            assert stored == sanitize_filename(raw.decode("utf-8", "replace"))
