"""Webhooks cannot reach this side's network (SSRF) and are signed the Standard Webhooks way.

Against real servers: HTTP(S) receivers on loopback that would record any request the guard
let through, real DNS resolution (`localhost`), the notification service on both databases,
and `alchemist up` as its own process for the checks at upload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import transaction
from alchemist.db.models import Job, OutboxMessage
from alchemist.messaging.base import Delivery
from alchemist.messaging.memory import InMemoryBroker
from alchemist.notification.channels.webhook import webhook_client
from alchemist.notification.mail import build_sender
from alchemist.notification.service import NotificationService
from alchemist.outbox import OutboxRelay
from alchemist.wiring import Backends, build_backends
from tests.e2e.conftest import free_port, running
from tests.media import write_media

# The spec's form: "whsec_" + base64 of random bytes (the key is the decoded bytes).
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
KEY = bytes(range(32))
LOOPBACK_V4 = "127.0.0.0/8"


@dataclass
class Request:
    """One request a receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP(S) server on one loopback address that records every request it gets."""

    status: int = 204
    location: str | None = None  # sent with a 3xx
    requests: list[Request] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI, as the client sent it
    port: int = 0


@contextmanager
def receiver(
    host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, **options: Any
) -> Iterator[Receiver]:
    """Serve a Receiver on host (IPv4 or IPv6 loopback), optionally over TLS, until the block ends."""
    state = Receiver(**options)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.status)
            if state.location:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, 0), Handler)
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: state.server_names.append(name)  # type: ignore[assignment,misc]
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Authority:
    """A throwaway CA and a server certificate it signed for the name `localhost` only."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def localhost_authority(tmp_path: Path) -> Authority:
    """The certificate names localhost and no IP address: a check against the IP would fail."""
    now = datetime.now(timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    return Authority(server, ssl.create_default_context(cafile=str(tmp_path / "ca.pem")))


# --- at delivery: the notification service ----------------------------------------------


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[Backends]:
    """The test's database (migrated), files in its temp dir, an in-process broker."""
    built = await build_backends(settings, name="test", broker=InMemoryBroker(settings.MAX_ATTEMPTS))
    try:
        yield built
    finally:
        await built.close()


@dataclass
class Notifier:
    """A NotificationService with its own settings, and the URLs its client really called."""

    service: NotificationService
    settings: Settings
    backends: Backends
    called: list[httpx.URL]

    async def deliver(self, webhook_url: str) -> Job:
        """Finish a job that asked for this webhook and run its first delivery; the job."""
        job = finished_job(self.backends, webhook_url)
        body = {
            "job_id": job.id, "delivery_id": uuid.uuid4().hex, "attempt": 1, "type": "job.done",
            "occurred_at": datetime.now(timezone.utc).isoformat(),
        }  # fmt: skip
        queue = self.settings.WEBHOOK_QUEUE
        await self.service.handle_webhook(Delivery(queue, body, f"{body['delivery_id']}.1", 1))
        return job

    def outcomes(self) -> dict[str, float]:
        """Webhook attempts counted by outcome."""
        registry = self.service.telemetry.registry
        found = {}
        for outcome in ("sent", "failed", "refused", "rejected"):
            labels = {"channel": "webhook", "outcome": outcome}
            found[outcome] = registry.get_sample_value("alchemist_notifications_total", labels) or 0.0
        return found

    def retries(self) -> list[OutboxMessage]:
        """Webhook deliveries scheduled in the outbox."""
        with transaction(self.backends.sessions) as session:
            query = select(OutboxMessage).where(OutboxMessage.queue == self.settings.WEBHOOK_QUEUE)
            return list(session.scalars(query))


@pytest.fixture
async def notifier_for(settings: Settings, stores: Backends) -> AsyncIterator[Any]:
    """A factory: a Notifier whose settings add these overrides (WEBHOOK_SECRET is always set)."""
    clients: list[httpx.AsyncClient] = []

    def make(client: httpx.AsyncClient | None = None, **overrides: Any) -> Notifier:
        tuned = Settings(**{**settings.model_dump(), "WEBHOOK_SECRET": SecretStr(SECRET), **overrides})
        http = client or webhook_client()
        if client is None:
            clients.append(http)
        called: list[httpx.URL] = []

        async def record(request: httpx.Request) -> None:
            called.append(request.url)

        http.event_hooks["request"].append(record)  # observes the real client; changes nothing
        relay = OutboxRelay(stores.sessions, stores.broker)
        service = NotificationService(tuned, stores, build_sender(tuned), http, relay)
        return Notifier(service, tuned, stores, called)

    yield make
    for http in clients:
        await http.aclose()


def finished_job(backends: Backends, webhook_url: str) -> Job:
    """A done job (as the converter leaves it) that asked for this webhook."""
    with transaction(backends.sessions) as session:
        job = jobs.create_job(
            session, owner="ann@example.com", filename="holiday.mp4", video_fid="a" * 32, video_bytes=10,
            webhook_url=webhook_url,
        )  # fmt: skip
        now = datetime.now(timezone.utc)
        assert jobs.start_attempt(session, job.id, now=now, stale_before=now)
        jobs.finish(
            session, job.id, mp3_fid="b" * 32, duration=2.0, seconds=0.5, warning=None, output_bytes=9
        )
        found = session.get(Job, job.id)
        assert found is not None
        return found


# Every form here names this machine; each receiver is listening, so a request the guard let
# through would be recorded (and the test would see it).
V4_FORMS = [
    "http://127.0.0.1:{port}/hook", "http://127.1:{port}/hook", "http://2130706433:{port}/hook",
    "http://0x7f000001:{port}/hook", "http://0177.0.0.1:{port}/hook", "http://0x7f.1:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook", "http://localhost:{port}/hook", "http://localhost.:{port}/hook",
    "http://LocalHost:{port}/hook", "http://0.0.0.0:{port}/hook", "http://0:{port}/hook",
    "http://[::ffff:7f00:1]:{port}/hook", "https://127.0.0.1:{port}/hook",
]  # fmt: skip
V6_FORMS = ["http://[::1]:{port}/hook", "http://[0:0:0:0:0:0:0:1]:{port}/hook", "http://[::]:{port}/hook"]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_every_form_of_this_machine_is_refused_at_delivery_and_not_retried(
    notifier_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    notifier: Notifier = notifier_for()
    with receiver("127.0.0.1") as v4:
        forms = [form.format(port=v4.port) for form in V4_FORMS]
        if ipv6_loopback():
            with receiver("::1") as v6:
                for form in V6_FORMS:
                    await notifier.deliver(form.format(port=v6.port))
                assert v6.requests == []
        for url in forms:
            await notifier.deliver(url)
    assert v4.requests == []  # not one request reached the listening receiver
    assert notifier.called == []  # the client was never even asked to send one
    expected = len(forms) + (len(V6_FORMS) if ipv6_loopback() else 0)
    assert notifier.outcomes()["refused"] == expected
    assert notifier.outcomes()["failed"] == notifier.outcomes()["sent"] == 0
    assert notifier.retries() == []  # refused for good: no retry scheduled
    assert "refused, not sent" in caplog.text and "public addresses only" in caplog.text


def hosts_file_name() -> str | None:
    """This machine's name when /etc/hosts lists it (so resolving it sends no DNS query)."""
    name = socket.gethostname()
    try:
        listed = Path("/etc/hosts").read_text().split()
    except OSError:
        return None
    return name if name in listed and name != "localhost" else None


async def test_a_name_is_judged_by_the_addresses_it_resolves_to(notifier_for: Any) -> None:
    # Resolved for real (from /etc/hosts: no query leaves the machine), then refused for the
    # address it names.
    name = hosts_file_name()
    if name is None:
        pytest.skip("this machine's name is not in /etc/hosts")
    notifier: Notifier = notifier_for()
    with receiver("127.0.0.1") as v4:
        await notifier.deliver(f"http://{name}:{v4.port}/hook")
    assert v4.requests == [] and notifier.called == []
    assert notifier.outcomes()["refused"] == 1
    assert notifier.retries() == []


async def test_the_allow_list_admits_an_intranet_receiver_and_the_request_verifies(notifier_for: Any) -> None:
    notifier: Notifier = notifier_for(WEBHOOK_ALLOWED_NETWORKS=LOOPBACK_V4)
    with receiver("127.0.0.1") as v4:
        job = await notifier.deliver(f"http://127.0.0.1:{v4.port}/hooks/alchemist?team=a")
    [got] = v4.requests
    assert got.path == "/hooks/alchemist?team=a"
    assert notifier.outcomes()["sent"] == 1
    # The reference implementation of the spec accepts it.
    payload = Webhook(SECRET).verify(got.body, got.headers)
    assert payload["type"] == "job.done"
    assert payload["data"]["id"] == job.id and payload["data"]["status"] == "done"
    assert datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert got.headers["content-type"] == "application/json"
    assert verify(KEY, got.headers, got.body)  # and so does the one in docs/webhooks.md
    # A changed body, id or timestamp (a replay with a new time) no longer verifies.
    tampered_body = got.body.replace(b'"done"', b'"failed"')
    later = {**got.headers, "webhook-timestamp": str(int(got.headers["webhook-timestamp"]) + 1)}
    other_id = {**got.headers, "webhook-id": "msg_other"}
    for body, headers in ((tampered_body, got.headers), (got.body, later), (got.body, other_id)):
        assert not verify(KEY, headers, body)
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # another server's key
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(got.body, got.headers)
    # An allow-list admits what it names, no more.
    narrow: Notifier = notifier_for(WEBHOOK_ALLOWED_NETWORKS="127.0.0.2/32")
    with receiver("127.0.0.1") as v4:
        await narrow.deliver(f"http://127.0.0.1:{v4.port}/hook")
    assert v4.requests == [] and narrow.outcomes()["refused"] == 1


def verify(key: bytes, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """An independent check of a Standard Webhooks signature (the one docs/webhooks.md shows)."""
    webhook_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(signature, expected)
        for version, _, signature in (entry.partition(",") for entry in headers["webhook-signature"].split())
    )


async def test_the_delivery_id_is_stable_across_retries_and_the_failed_event_is_typed(
    notifier_for: Any,
) -> None:
    notifier: Notifier = notifier_for(WEBHOOK_ALLOWED_NETWORKS=LOOPBACK_V4)
    with receiver("127.0.0.1", status=503) as v4:
        job = finished_job(notifier.backends, f"http://127.0.0.1:{v4.port}/hook")
        body = {"job_id": job.id, "delivery_id": "d" * 32, "attempt": 1, "type": "job.failed",
                "occurred_at": "2030-01-02T03:04:05+00:00"}  # fmt: skip
        await notifier.service.handle_webhook(Delivery("webhook", body, "x.1", 1))
        [retry] = notifier.retries()
        await notifier.service.handle_webhook(Delivery("webhook", json.loads(retry.body), "x.2", 1))
    first, second = v4.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "d" * 32
    for got in (first, second):
        payload = Webhook(SECRET).verify(got.body, got.headers)
        assert (payload["type"], payload["timestamp"]) == ("job.failed", "2030-01-02T03:04:05Z")


async def test_a_name_connects_to_the_address_that_was_checked(notifier_for: Any) -> None:
    # `localhost` resolves (really) to loopback, which the allow-list admits: the request goes
    # to that checked address, never to a second lookup, and the receiver still sees the name.
    notifier: Notifier = notifier_for(WEBHOOK_ALLOWED_NETWORKS=f"{LOOPBACK_V4},::1/128")
    with receiver("127.0.0.1") as v4:
        await notifier.deliver(f"http://localhost:{v4.port}/hook")
    [got] = v4.requests
    assert got.headers["host"] == f"localhost:{v4.port}"
    [called] = notifier.called
    assert called.host in ("127.0.0.1", "::1")  # the client was handed an address, not the name
    assert notifier.outcomes()["sent"] == 1


async def test_tls_is_verified_for_the_name_while_the_connection_is_pinned(
    notifier_for: Any, tmp_path: Path
) -> None:
    authority = localhost_authority(tmp_path)
    client = httpx.AsyncClient(verify=authority.client, trust_env=False)
    notifier: Notifier = notifier_for(client, WEBHOOK_ALLOWED_NETWORKS=f"{LOOPBACK_V4},::1/128")
    try:
        with receiver("127.0.0.1", tls=authority.server) as v4:
            await notifier.deliver(f"https://localhost:{v4.port}/hook")
    finally:
        await client.aclose()
    [got] = v4.requests
    assert v4.server_names == ["localhost"]  # SNI names the host, though the socket went to an IP
    assert got.headers["host"] == f"localhost:{v4.port}"
    assert Webhook(SECRET).verify(got.body, got.headers)["type"] == "job.done"
    assert notifier.outcomes()["sent"] == 1


async def test_redirects_are_never_followed(notifier_for: Any) -> None:
    notifier: Notifier = notifier_for(WEBHOOK_ALLOWED_NETWORKS=LOOPBACK_V4)
    with receiver("127.0.0.1") as target:
        for status in (301, 302, 307, 308):
            with receiver("127.0.0.1", status=status, location=f"http://127.0.0.1:{target.port}/x") as hop:
                await notifier.deliver(f"http://127.0.0.1:{hop.port}/hook")
            assert len(hop.requests) == 1
    assert target.requests == []
    assert notifier.outcomes()["rejected"] == 4
    assert notifier.retries() == []  # a redirect is the URL's fault: no retry either


async def test_without_a_webhook_secret_nothing_is_sent(notifier_for: Any) -> None:
    notifier: Notifier = notifier_for(WEBHOOK_SECRET=None, WEBHOOK_ALLOWED_NETWORKS=LOOPBACK_V4)
    with receiver("127.0.0.1") as v4:
        await notifier.deliver(f"http://127.0.0.1:{v4.port}/hook")
    assert v4.requests == []
    assert notifier.outcomes()["refused"] == 1


# --- at upload: the gateway, in `alchemist up` --------------------------------------------


@dataclass(frozen=True)
class Gateway:
    """A running `alchemist up` and an admin's token."""

    url: str
    token: str
    data_dir: Path


@pytest.fixture(scope="module")
def guarded_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`alchemist up` with a WEBHOOK_SECRET and no allowed networks."""
    tmp = tmp_path_factory.mktemp("webhooks-up")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MYSQL_", "JWT_", "SMTP_", "AMQP", "WEBHOOK"))
    }
    env.update(ALCHEMIST_DATA_DIR=str(tmp / "data"), WEBHOOK_SECRET=SECRET)
    url = f"http://127.0.0.1:{port}"
    with running(["up", "--host", "127.0.0.1", "--port", str(port)], env, f"{url}/readyz", tmp / "up.log"):
        password = (tmp / "up.log").read_text().split("with password ")[1].split()[0]
        token = httpx.post(f"{url}/login", auth=("admin@alchemist.local", password)).text
        yield Gateway(url, token, tmp / "data")


def stored_videos(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "videos").rglob("*") if p.is_file() and ".incoming" not in p.parts}


UPLOAD_FORMS = [
    "http://127.0.0.1/hook", "http://127.1/hook", "http://2130706433/hook", "http://0x7f000001/hook",
    "http://0177.0.0.1/hook", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook", "http://localhost/hook",
    "http://localhost./hook", "http://api.localhost/hook", "http://0.0.0.0/hook", "http://[::]/hook",
    "http://10.0.0.1/hook", "http://172.16.5.4/hook", "http://192.168.1.10:8080/hook",
    "http://100.64.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
    "http://100.100.100.200/", "http://[fe80::1]/hook", "http://224.0.0.1/hook", "http://[ff02::1]/hook",
    "http://240.0.0.1/hook", "http://[fc00::1]/hook", "http://[64:ff9b::a9fe:a9fe]/hook",
    "https://[::ffff:a9fe:a9fe]/hook",
]  # fmt: skip


def upload(gateway: Gateway, clip: Path, **fields: str) -> httpx.Response:
    with clip.open("rb") as handle:
        return httpx.post(
            f"{gateway.url}/upload", files={"file": (clip.name, handle, "video/mp4")}, data=fields,
            headers={"Authorization": f"Bearer {gateway.token}"}, timeout=60,
        )  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_media(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=1)


@pytest.mark.parametrize("url", UPLOAD_FORMS)
def test_forbidden_addresses_are_a_400_at_upload_and_nothing_is_kept(
    guarded_up: Gateway, clip: Path, url: str
) -> None:
    before = stored_videos(guarded_up.data_dir)
    response = upload(guarded_up, clip, webhook_url=url)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith("webhook_url: ") and "public addresses only" in detail, detail
    assert stored_videos(guarded_up.data_dir) == before


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "javascript:alert(1)"])
def test_only_http_and_https_webhooks_are_accepted(guarded_up: Gateway, clip: Path, url: str) -> None:
    response = upload(guarded_up, clip, webhook_url=url)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("webhook_url: ")


def test_the_page_is_told_webhooks_are_on(guarded_up: Gateway) -> None:
    features = httpx.get(f"{guarded_up.url}/api/v1/features").json()
    assert features == {"api_docs": True, "webhooks": True}
