"""The notification service: consumes MP3_QUEUE, emails the owner, then calls the job's webhook.

At least once, recognisably: the claim is a lease that expires (a notifier that dies between
the claim and the send is replaced), the email's Message-ID is derived from the job, and
sending is the last step before the job is marked notified. Webhook deliveries are messages
on WEBHOOK_QUEUE, retried with backoff through the outbox, never by sleeping in a handler; one
to a forbidden address (netguard) is refused, logged and counted, never retried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx
from sqlalchemy.orm import Session

from alchemist import jobs, outbox
from alchemist.config import Settings
from alchemist.db.engine import run_in_transaction
from alchemist.db.models import Job
from alchemist.db.outage import outlasting
from alchemist.messaging.base import Delivery, PermanentFailure, Subscription, SubscriptionGroup
from alchemist.messaging.messages import Mp3Ready, ValidationError
from alchemist.notification.channels.email import EmailChannel
from alchemist.notification.channels.webhook import (
    EVENTS,
    WebhookChannel,
    WebhookRefused,
    WebhookRejected,
    WebhookRetry,
    event_type,
)
from alchemist.notification.mail import MailSender
from alchemist.outbox import OutboxRelay
from alchemist.telemetry import Telemetry
from alchemist.wiring import Backends

logger = logging.getLogger(__name__)
WEBHOOK_FIRST_DELAY = 1.0
DEAD_MP3_DELAY = 60.0  # a dead-lettered notification is tried again this much later


def utcnow() -> datetime:
    """Now, for leases."""
    return datetime.now(timezone.utc)


@dataclass
class NotificationService:
    """The handler of MP3_QUEUE, its dead letters and WEBHOOK_QUEUE."""

    settings: Settings
    backends: Backends
    mail: MailSender
    http: httpx.AsyncClient
    relay: OutboxRelay
    telemetry: Telemetry = field(default_factory=Telemetry)

    @property
    def email(self) -> EmailChannel:
        """The email channel."""
        return EmailChannel(self.settings, self.mail)

    async def start(self) -> Subscription:
        """Consume MP3_QUEUE, its dead letters and WEBHOOK_QUEUE."""
        broker, settings = self.backends.broker, self.settings
        settings.webhook_key()  # a malformed WEBHOOK_SECRET stops the start (ConfigError), not a delivery
        return SubscriptionGroup(
            await broker.consume(settings.MP3_QUEUE, self.handle, prefetch=4),
            await broker.consume_dead(settings.MP3_QUEUE, self.handle_dead),
            await broker.consume(settings.WEBHOOK_QUEUE, self.handle_webhook, prefetch=8),
        )

    async def handle(self, delivery: Delivery) -> None:
        """Tell the owner of one finished job (once, unless a crash makes it twice)."""
        try:
            message = Mp3Ready.model_validate(delivery.body)
        except ValidationError as exc:
            raise PermanentFailure(f"not an mp3 message: {exc}") from exc
        sessions = self.backends.sessions
        lease = self.settings.NOTIFY_LEASE_SECONDS
        job = await outlasting(
            lambda: run_in_transaction(
                sessions, jobs.claim_notification, message.job_id, now=utcnow(), lease=lease
            ),
            every=self.settings.HEARTBEAT_SECONDS,
            what=f"notification of job {message.job_id}",
        )
        if job is None:
            return  # told already, deleted, or another notifier holds the lease (it expires)
        if job.notify_attempts > self.settings.NOTIFY_MAX_ATTEMPTS:
            logger.error(
                "giving up telling %s about job %s after %d tries", job.owner, job.id, job.notify_attempts
            )
            await run_in_transaction(sessions, jobs.mark_notified, job.id, utcnow())
            return
        try:
            await asyncio.to_thread(self.email.send, job)
        except Exception:
            self.telemetry.notifications.labels("email", "failed").inc()
            await run_in_transaction(sessions, jobs.release_notification, job.id)
            raise
        self.telemetry.notifications.labels("email", "sent").inc()
        await run_in_transaction(sessions, self._record_sent, job)
        self.relay.kick()

    async def handle_dead(self, delivery: Delivery) -> None:
        """A notification that failed every attempt (SMTP down for long): try again later."""
        job_id = str(delivery.body.get("job_id", ""))
        job = await run_in_transaction(self.backends.sessions, jobs.get_job, job_id) if job_id else None
        if job is None or job.notified_at is not None:
            return
        await run_in_transaction(
            self.backends.sessions, outbox.add, self.settings.MP3_QUEUE, delivery.body,
            f"{job.id}.retry.{job.notify_attempts}", delay=DEAD_MP3_DELAY,
        )  # fmt: skip
        self.relay.kick()

    async def handle_webhook(self, delivery: Delivery) -> None:
        """One webhook delivery attempt; a failure schedules the next one with backoff."""
        body = delivery.body
        job = await run_in_transaction(self.backends.sessions, jobs.get_job, str(body.get("job_id", "")))
        if job is None or not job.webhook_url:
            return
        delivery_id, attempt = str(body.get("delivery_id", "")), int(body.get("attempt", 1))
        # Messages queued before the event was recorded in them: the job still tells it.
        event = body["type"] if body.get("type") in EVENTS else event_type(job)
        occurred = _moment(body.get("occurred_at")) or jobs.as_utc(job.updated_at) or utcnow()
        try:
            await WebhookChannel(self.settings, self.http).deliver(job, delivery_id, event, occurred)
            self.telemetry.notifications.labels("webhook", "sent").inc()
        except WebhookRefused as exc:
            self.telemetry.notifications.labels("webhook", "refused").inc()
            logger.error("webhook %s for job %s refused, not sent: %s", delivery_id, job.id, exc)
        except WebhookRejected as exc:
            self.telemetry.notifications.labels("webhook", "rejected").inc()
            logger.warning("webhook %s for job %s rejected by the receiver: %s", delivery_id, job.id, exc)
        except WebhookRetry as exc:
            self.telemetry.notifications.labels("webhook", "failed").inc()
            if attempt >= self.settings.WEBHOOK_MAX_ATTEMPTS:
                logger.error(
                    "webhook %s for job %s gave up after %d tries: %s", delivery_id, job.id, attempt, exc
                )
                return
            delay = WEBHOOK_FIRST_DELAY * 2 ** (attempt - 1)
            logger.warning("webhook %s (job %s) failed: %s; retry in %.0f s", delivery_id, job.id, exc, delay)
            next_body = {**body, "job_id": job.id, "delivery_id": delivery_id, "attempt": attempt + 1}
            await run_in_transaction(
                self.backends.sessions, outbox.add, self.settings.WEBHOOK_QUEUE, next_body,
                f"{delivery_id}.{attempt + 1}", delay=delay,
            )  # fmt: skip
            self.relay.kick()

    def _record_sent(self, session: Session, job: Job) -> None:
        """Mark the owner told and queue the webhook's first delivery, in one transaction."""
        jobs.mark_notified(session, job.id, utcnow())
        if job.webhook_url:
            delivery_id = uuid.uuid4().hex
            occurred = jobs.as_utc(job.updated_at) or utcnow()  # when it finished (claims keep it)
            body = {
                "job_id": job.id, "delivery_id": delivery_id, "attempt": 1,
                "type": event_type(job), "occurred_at": occurred.isoformat(),
            }  # fmt: skip
            outbox.add(session, self.settings.WEBHOOK_QUEUE, body, f"{delivery_id}.1")


def _moment(value: object) -> datetime | None:
    """An ISO-8601 moment from a message, or None."""
    try:
        return jobs.as_utc(datetime.fromisoformat(str(value))) if value else None
    except ValueError:
        return None
