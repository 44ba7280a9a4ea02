"""The gateway's API beyond the seeds' session, against `alchemist up`: auth errors, ranges,
events, metrics, webhooks and malformed uploads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.e2e.conftest import Up
from tests.media import write_media


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(up: Up, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as handle:
        return httpx.post(f"{up.url}/upload", files={"file": (path.name, handle, "video/mp4")}, data=fields,
                          headers=bearer(up.token), timeout=60)  # fmt: skip


def wait_done(up: Up, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, object] = httpx.get(f"{up.url}/api/v1/jobs/{job_id}", headers=bearer(up.token)).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(job_id)


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Basic YTpi"}, 401), ({"Authorization": "Bearer a.b.c"}, 403)],
)
def test_every_protected_route_checks_the_token(up: Up, headers: dict[str, str], status: int) -> None:
    for method, path in (("POST", "/upload"), ("GET", "/download?fid=x"), ("GET", "/api/v1/jobs"),
                         ("GET", "/api/v1/jobs/x"), ("DELETE", "/api/v1/jobs/x")):  # fmt: skip
        response = httpx.request(method, f"{up.url}{path}", headers=headers)
        assert response.status_code == status, (method, path)
        assert "detail" in response.json()


def test_login_errors_are_forwarded_from_auth(up: Up) -> None:
    wrong = httpx.post(f"{up.url}/login", auth=("admin@alchemist.local", "wrong password"))
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "Invalid credentials"}
    assert httpx.post(f"{up.url}/login").status_code == 401


def test_malformed_uploads_are_400(up: Up) -> None:
    cases = {
        "not multipart": ({"Content-Type": "application/json"}, b"{}", "multipart/form-data"),
        "no closing boundary": (
            {"Content-Type": "multipart/form-data; boundary=XX"},
            b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\nabc',
            "ended before its closing boundary",
        ),
        "file under another name": (
            {"Content-Type": "multipart/form-data; boundary=XX"},
            b'--XX\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n\r\n'
            b"abc\r\n--XX--\r\n",
            "send the video as 'file'",
        ),
    }
    before = sorted((up.data_dir / "videos").rglob("*"))
    for name, (headers, body, detail) in cases.items():
        response = httpx.post(f"{up.url}/upload", headers={**headers, **bearer(up.token)}, content=body)
        assert response.status_code == 400, name
        assert detail in response.json()["detail"], (name, response.text)
    after = [p for p in sorted((up.data_dir / "videos").rglob("*")) if ".incoming" not in p.parts]
    assert after == [p for p in before if ".incoming" not in p.parts]


def test_ranges_events_and_metrics(up: Up, tmp_path: Path) -> None:
    clip = write_media(tmp_path / "ränge clip.mp4", seconds=2)
    job_id = upload(up, clip).json()["job_id"]
    with httpx.stream(
        "GET", f"{up.url}/api/v1/jobs/{job_id}/events", headers=bearer(up.token), timeout=60
    ) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        payloads = [json.loads(line[5:]) for line in events.iter_lines() if line.startswith("data:")]
    assert payloads[-1]["status"] == "done"
    fid = payloads[-1]["mp3_fid"]
    whole = httpx.get(f"{up.url}/download", params={"fid": fid}, headers=bearer(up.token))
    assert whole.headers["content-type"] == "audio/mpeg"
    assert "filename*=UTF-8''r%C3%A4nge%20clip.mp3" in whole.headers["content-disposition"]
    size = len(whole.content)
    part = httpx.get(
        f"{up.url}/download", params={"fid": fid}, headers={**bearer(up.token), "Range": "bytes=-100"}
    )
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    assert part.content == whole.content[-100:]
    beyond = httpx.get(
        f"{up.url}/download", params={"fid": fid}, headers={**bearer(up.token), "Range": f"bytes={size}-"}
    )
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    metrics = httpx.get(f"{up.url}/metrics").text
    assert 'alchemist_jobs{status="done"}' in metrics
    assert 'alchemist_http_requests_total{method="GET",route="/download",status="206"} 1.0' in metrics
    assert "alchemist_queue_lag_seconds" in metrics
    assert 'alchemist_http_request_duration_seconds_count{method="GET",route="/download"}' in metrics
    assert "alchemist_outbox_pending " in metrics and "alchemist_database_up 1.0" in metrics
    assert 'alchemist_conversions_total{status="done"}' in metrics
    assert "alchemist_conversions_total" in metrics
    seconds = [
        line for line in metrics.splitlines() if line.startswith("alchemist_conversion_seconds_total ")
    ]
    assert seconds and float(seconds[0].split()[1]) > 0
    assert httpx.get(f"{up.url}/docs").status_code == 200


@dataclass
class WebhookReceiver:
    fail_first: int
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                self.send_response(500 if len(receiver.calls) <= receiver.fail_first else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_port}/hook"


def test_webhooks_are_signed_and_retried(up: Up, tmp_path: Path) -> None:
    receiver = WebhookReceiver(fail_first=1)
    server, hook = receiver.serve()
    try:
        job_id = upload(up, write_media(tmp_path / "hooked.mp4"), webhook_url=hook).json()["job_id"]
        wait_done(up, job_id)
        deadline = time.monotonic() + 30
        while len(receiver.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.shutdown()
    assert len(receiver.calls) == 2  # one 500, one retry that succeeded, nothing after
    (first, _), (headers, body) = receiver.calls
    assert first["webhook-id"] == headers["webhook-id"]  # one delivery, tried twice
    # Standard Webhooks: a raw WEBHOOK_SECRET is the key as it is (its UTF-8 bytes).
    webhook = Webhook(up.webhook_secret.encode())
    event = webhook.verify(body, headers)
    assert event["type"] == "job.done"
    assert event["data"]["id"] == job_id and event["data"]["status"] == "done"
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(up.webhook_secret.encode(), signed, hashlib.sha256).digest())
    assert headers["webhook-signature"] == f"v1,{expected.decode()}"
    for key in (up.jwt_secret.encode(), b"another key"):  # never the JWT secret
        with pytest.raises(WebhookVerificationError):
            Webhook(key).verify(body, headers)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"webhook_url": "file:///etc/passwd"}, "webhook_url: URL scheme should be 'http' or 'https'"),
        ({"webhook_url": "not a url"}, "webhook_url:"),
        ({"bitrat": "64k"}, "unknown field 'bitrat'"),
        ({"webhook_url": "http://" + "a" * 3000 + ".com"}, "webhook_url"),
    ],
)
def test_bad_upload_options_are_a_400_that_names_them_and_keep_nothing(
    up: Up, tmp_path: Path, fields: dict[str, str], words: str
) -> None:
    before = {p.name for p in (up.data_dir / "videos").rglob("*") if p.is_file()}
    response = upload(up, write_media(tmp_path / "x.mp4"), **fields)
    assert response.status_code == 400
    assert words in response.json()["detail"]
    after = {p.name for p in (up.data_dir / "videos").rglob("*") if p.is_file()}
    assert after <= before


def test_convert_with_a_server_uploads_follows_and_downloads(up: Up, tmp_path: Path) -> None:
    from tests.e2e.conftest import alchemist

    good = write_media(tmp_path / "good.mp4", seconds=2)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    password = (up.data_dir.parent / "up.log").read_text().split("with password ")[1].split()[0]
    env = {**os.environ, "ALCHEMIST_PASSWORD": password, "COLUMNS": "200"}
    out = tmp_path / "out"
    done = alchemist("convert", str(good), str(text), "-o", str(out), "--server", up.url,
                     "--user", "admin@alchemist.local", env=env)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"failed: {text}: not a media file" in done.stderr
    from tests.media import decode

    assert abs(decode(out / "good.mp3").duration - 2) < 0.1
    assert not (out / "notes.mp3").exists()
    refused = alchemist("convert", str(good), "-o", str(out), "--server", up.url,
                        "--user", "admin@alchemist.local", env=env)  # fmt: skip
    assert refused.returncode == 1
    assert "exists (use --force to overwrite)" in refused.stderr
    wrong = alchemist("convert", str(good), "--server", up.url, "--user", "admin@alchemist.local",
                      env={**env, "ALCHEMIST_PASSWORD": "wrong"})  # fmt: skip
    assert wrong.returncode == 1
    assert "login failed: Invalid credentials" in wrong.stderr
