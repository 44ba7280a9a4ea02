"""The notification service against a real SMTP server and real webhook receivers, on both databases."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import transaction
from alchemist.db.models import Job
from alchemist.messaging.base import Delivery
from alchemist.messaging.messages import Mp3Ready
from alchemist.notification.channels.webhook import webhook_client
from alchemist.notification.mail import SmtpSender
from alchemist.notification.service import DEAD_MP3_DELAY, NotificationService
from alchemist.outbox import OutboxRelay
from alchemist.wiring import Backends
from tests.e2e.stack import MailCatcher
from tests.integration.conftest import Clock, configured, eventually, load_job, outbox_rows

OWNER = "ann@example.com"
WEBHOOK_SECRET = "webhook-secret-" + "w" * 32


@pytest.fixture
def mail() -> Iterator[MailCatcher]:
    """An SMTP server on loopback that keeps what it is sent."""
    catcher = MailCatcher()
    catcher.controller.start()
    try:
        yield catcher
    finally:
        catcher.controller.stop()


def restart(mail: MailCatcher) -> None:
    """Bring a stopped MailCatcher back on the same port (the SMTP server came back)."""
    mail.controller = Controller(mail, hostname="127.0.0.1", port=mail.port)
    mail.controller.start()


@dataclass
class Notifier:
    """The service under test and what it runs on."""

    service: NotificationService
    relay: OutboxRelay
    settings: Settings
    backends: Backends


@pytest.fixture
async def notifier(
    settings: Settings, backends: Backends, clock: Clock, mail: MailCatcher
) -> AsyncIterator[Notifier]:
    """NotificationService over SMTP to the MailCatcher, its relay on the test's clock."""
    tuned = configured(
        settings, SMTP_HOST="127.0.0.1", SMTP_PORT=mail.port, SMTP_SECURITY="none",
        PUBLIC_URL="https://alchemist.example.org", WEBHOOK_SECRET=WEBHOOK_SECRET,
        WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",  # the receivers run on loopback
        NOTIFY_LEASE_SECONDS=120.0, WEBHOOK_MAX_ATTEMPTS=4,
    )  # fmt: skip
    relay = OutboxRelay(backends.sessions, backends.broker, clock=clock)
    async with webhook_client() as http:
        yield Notifier(
            NotificationService(tuned, backends, SmtpSender(tuned), http, relay), relay, tuned, backends
        )


def finished_job(backends: Backends, *, failed: bool = False, webhook_url: str | None = None) -> Job:
    """A job that just ended (done with an MP3 id, or failed with a reason), owner not told yet."""
    with transaction(backends.sessions) as session:
        job = jobs.create_job(
            session,
            owner=OWNER,
            filename="holiday.mp4",
            video_fid="a" * 32,
            video_bytes=10,
            webhook_url=webhook_url,
        )
        now = datetime.now(timezone.utc)
        assert jobs.start_attempt(session, job.id, now=now, stale_before=now)
        if failed:
            assert jobs.fail(session, job.id, "the file has no audio track to convert")
        else:
            jobs.finish(
                session, job.id, mp3_fid="b" * 32, duration=2.0, seconds=0.5, warning=None, output_bytes=9
            )
    return load_job(backends.sessions, job.id)


def announcement(settings: Settings, job: Job, attempt: int = 1) -> Delivery:
    """The MP3_QUEUE message the converter sends when a job ends."""
    message = Mp3Ready(
        job_id=job.id, video_fid=job.video_fid or "", mp3_fid=job.mp3_fid, username=job.owner,
        status="done" if job.mp3_fid else "failed", error=job.error,
    )  # fmt: skip
    return Delivery(settings.MP3_QUEUE, message.to_body(), f"{job.id}.done", attempt)


async def test_one_email_per_job_with_a_stable_message_id_and_a_date(
    notifier: Notifier, mail: MailCatcher
) -> None:
    done, failed = finished_job(notifier.backends), finished_job(notifier.backends, failed=True)
    await notifier.service.handle(announcement(notifier.settings, done))
    await notifier.service.handle(announcement(notifier.settings, failed))
    [told] = mail.for_job(done.id)
    [refused] = mail.for_job(failed.id)
    assert told["Message-ID"] == f"<job-{done.id}@alchemist.example.org>"
    assert refused["Message-ID"] == f"<job-{failed.id}@alchemist.example.org>"
    for message in (told, refused):
        assert message["To"] == OWNER
        sent_at = email.utils.parsedate_to_datetime(message["Date"])
        assert sent_at.tzinfo is not None
        assert abs(sent_at - datetime.now(timezone.utc)) < timedelta(hours=1)  # today's date, not a fixed one
    assert "Your MP3 is ready" in told["Subject"]
    assert "the file has no audio track to convert" in refused.get_content()
    assert load_job(notifier.backends.sessions, done.id).notified_at is not None


async def test_a_second_delivery_of_the_same_message_sends_nothing(
    notifier: Notifier, mail: MailCatcher
) -> None:
    job = finished_job(notifier.backends)
    await notifier.service.handle(announcement(notifier.settings, job))
    await notifier.service.handle(announcement(notifier.settings, job, attempt=2))
    assert len(mail.for_job(job.id)) == 1


async def test_a_duplicate_email_carries_the_same_message_id(notifier: Notifier, mail: MailCatcher) -> None:
    # A notifier that sent, then died before recording it: the one after it sends again,
    # and the owner's mail client can tell it is the same message.
    job = finished_job(notifier.backends)
    notifier.service.email.send(job)
    await notifier.service.handle(announcement(notifier.settings, job))
    first, second = mail.for_job(job.id)
    assert first["Message-ID"] == second["Message-ID"] == f"<job-{job.id}@alchemist.example.org>"


async def test_a_notification_another_notifier_holds_is_left_to_it(
    notifier: Notifier, mail: MailCatcher
) -> None:
    job = finished_job(notifier.backends)
    with transaction(notifier.backends.sessions) as session:  # alive, sending right now
        assert jobs.claim_notification(session, job.id, now=datetime.now(timezone.utc), lease=120) is not None
    await notifier.service.handle(announcement(notifier.settings, job))
    assert mail.for_job(job.id) == []
    assert load_job(notifier.backends.sessions, job.id).notified_at is None


async def test_a_notifier_that_died_after_claiming_is_replaced_once_its_lease_ends(
    notifier: Notifier, mail: MailCatcher
) -> None:
    job = finished_job(notifier.backends)
    lease = notifier.settings.NOTIFY_LEASE_SECONDS
    died_at = datetime.now(timezone.utc) - timedelta(seconds=lease + 1)
    with transaction(notifier.backends.sessions) as session:  # claimed, then nothing: it died
        assert jobs.claim_notification(session, job.id, now=died_at, lease=lease) is not None
    await notifier.service.handle(announcement(notifier.settings, job))
    [told] = mail.for_job(job.id)
    assert told["Message-ID"] == f"<job-{job.id}@alchemist.example.org>"
    after = load_job(notifier.backends.sessions, job.id)
    assert (after.notified_at is not None, after.notify_attempts) == (True, 2)
    await notifier.service.handle(announcement(notifier.settings, job, attempt=2))
    assert len(mail.for_job(job.id)) == 1


async def test_smtp_refusing_releases_the_lease_and_raises_for_a_retry(
    notifier: Notifier, mail: MailCatcher
) -> None:
    job = finished_job(notifier.backends)
    mail.controller.stop()
    with pytest.raises(OSError):
        await notifier.service.handle(announcement(notifier.settings, job))
    held = load_job(notifier.backends.sessions, job.id)
    assert (held.notified_at, held.notify_lease_until, held.notify_attempts) == (None, None, 1)
    restart(mail)
    await notifier.service.handle(announcement(notifier.settings, job, attempt=2))  # the broker's retry
    assert len(mail.for_job(job.id)) == 1
    assert load_job(notifier.backends.sessions, job.id).notified_at is not None


async def test_an_smtp_outage_longer_than_the_retries_ends_in_one_email_later(
    notifier: Notifier, mail: MailCatcher, clock: Clock
) -> None:
    settings, sessions = notifier.settings, notifier.backends.sessions
    job = finished_job(notifier.backends)
    mail.controller.stop()
    subscription = await notifier.service.start()
    try:
        with transaction(sessions) as session:
            jobs.queue_announcement(session, settings, job)
        clock.pin()
        assert await notifier.relay.run_once() == 1
        # Every broker attempt fails; the dead letter is parked in the outbox for later.
        await eventually(lambda: len(outbox_rows(sessions, settings.MP3_QUEUE)) == 1)
        [parked] = outbox_rows(sessions, settings.MP3_QUEUE)
        assert parked.available_at - parked.created_at == timedelta(seconds=DEAD_MP3_DELAY)
        assert load_job(sessions, job.id).notify_attempts == settings.MAX_ATTEMPTS
        assert await notifier.relay.run_once() == 0  # not due yet
        restart(mail)
        clock.pin(parked.available_at)
        assert await notifier.relay.run_once() == 1
        await eventually(lambda: len(mail.for_job(job.id)) == 1)
        await eventually(lambda: load_job(sessions, job.id).notified_at is not None)
    finally:
        await subscription.cancel(grace=10)
    assert len(mail.for_job(job.id)) == 1
    assert outbox_rows(sessions, settings.MP3_QUEUE) == []


@dataclass
class Received:
    """One request a webhook receiver got."""

    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """An HTTP server on loopback answering each POST with the next scripted status."""

    statuses: list[int]
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alchemist"

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(Received(dict(self.headers.items()), body))
                status = receiver.statuses[min(len(receiver.received), len(receiver.statuses)) - 1]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def worth_retrying(status: int) -> bool:
    """What the issue asks: retry 5xx, 408, 425 and 429; any other answer is final."""
    return status >= 500 or status in (408, 425, 429)


async def run_webhook_deliveries(notifier: Notifier, clock: Clock, receiver: WebhookReceiver) -> int:
    """Release each scheduled delivery exactly when it falls due; how many were released."""
    settings, sessions = notifier.settings, notifier.backends.sessions
    released = 0
    while rows := outbox_rows(sessions, settings.WEBHOOK_QUEUE):
        [row] = rows  # one delivery at a time, never a second copy
        attempt = row.body["attempt"]
        assert attempt == released + 1
        backoff = 0 if attempt == 1 else 2 ** (attempt - 2)  # 0, then 1 s, 2 s, 4 s ...
        assert row.available_at - row.created_at == timedelta(seconds=backoff)
        clock.pin(row.available_at - timedelta(milliseconds=1))
        assert await notifier.relay.run_once() == 0  # scheduled, not sent early by anyone
        assert len(receiver.received) == released
        clock.pin(row.available_at)
        assert await notifier.relay.run_once() == 1
        released += 1
        await eventually(lambda n=released: len(receiver.received) == n)
        status = receiver.statuses[min(released, len(receiver.statuses)) - 1]
        if worth_retrying(status) and released < settings.WEBHOOK_MAX_ATTEMPTS:
            # The handler answered at once (it did not sleep): the next try waits in the outbox.
            await eventually(lambda: len(outbox_rows(sessions, settings.WEBHOOK_QUEUE)) == 1)
    return released


async def deliver_through_the_queue(notifier: Notifier, clock: Clock, receiver: WebhookReceiver) -> Job:
    """Tell the owner of a done job with a webhook, then let every delivery run; the job."""
    job = finished_job(notifier.backends, webhook_url=receiver.url)
    subscription = await notifier.service.start()
    try:
        await notifier.service.handle(announcement(notifier.settings, job))
        await run_webhook_deliveries(notifier, clock, receiver)
    finally:
        await subscription.cancel(grace=10)  # lets the last handler finish
    return job


def signed_by(secret: str, request: Received) -> bool:
    """Standard Webhooks: `v1,` and the base64 HMAC-SHA256 of "id.timestamp.body" under the secret."""
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    )
    expected = "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(request.headers["webhook-signature"], expected)


async def test_a_webhook_is_retried_with_backoff_from_the_queue_with_one_delivery_id(
    notifier: Notifier, clock: Clock
) -> None:
    with WebhookReceiver([500, 500, 200]) as receiver:
        job = await deliver_through_the_queue(notifier, clock, receiver)
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # one delivery, retried
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(stamps)  # each attempt signed when it is made
    for request in receiver.received:
        assert signed_by(WEBHOOK_SECRET, request)
        assert not signed_by("some-other-secret-" + "x" * 30, request)
        sent = json.loads(request.body)
        assert sent["type"] == "job.done"
        assert (sent["data"]["id"], sent["data"]["status"], sent["data"]["mp3_fid"]) == (
            job.id,
            "done",
            job.mp3_fid,
        )
    assert outbox_rows(notifier.backends.sessions, notifier.settings.WEBHOOK_QUEUE) == []


async def test_a_webhook_that_keeps_failing_stops_after_the_last_attempt(
    notifier: Notifier, clock: Clock
) -> None:
    with WebhookReceiver([503]) as receiver:
        await deliver_through_the_queue(notifier, clock, receiver)
    assert len(receiver.received) == notifier.settings.WEBHOOK_MAX_ATTEMPTS == 4
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert outbox_rows(notifier.backends.sessions, notifier.settings.WEBHOOK_QUEUE) == []


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_a_webhook_refused_with_a_4xx_is_not_retried(
    notifier: Notifier, clock: Clock, status: int
) -> None:
    with WebhookReceiver([status, 200]) as receiver:
        await deliver_through_the_queue(notifier, clock, receiver)
    assert len(receiver.received) == 1
    assert outbox_rows(notifier.backends.sessions, notifier.settings.WEBHOOK_QUEUE) == []


@pytest.mark.parametrize("status", [408, 425, 429])
async def test_a_webhook_asking_to_slow_down_is_retried(
    notifier: Notifier, clock: Clock, status: int
) -> None:
    with WebhookReceiver([status, 200]) as receiver:
        await deliver_through_the_queue(notifier, clock, receiver)
    assert len(receiver.received) == 2
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
