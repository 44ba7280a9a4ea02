"""The notification service: consumes MP3_QUEUE, emails the owner, calls the job's webhook.

Exactly one notification per job: a conditional update claims the job before sending, and
is released if sending fails so that the retry may send.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import quote

import httpx
from sqlalchemy.orm import Session

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import run_in_transaction
from alchemist.db.models import Job, JobStatus
from alchemist.messaging.base import Delivery, PermanentFailure, Subscription
from alchemist.messaging.messages import Mp3Ready, ValidationError
from alchemist.notification.mail import MailSender
from alchemist.wiring import Backends

logger = logging.getLogger(__name__)
WEBHOOK_DELAYS = (1.0, 2.0, 4.0)


@dataclass
class NotificationService:
    """The handler of MP3_QUEUE."""

    settings: Settings
    backends: Backends
    mail: MailSender
    http: httpx.AsyncClient

    async def start(self) -> Subscription:
        """Consume MP3_QUEUE."""
        return await self.backends.broker.consume(self.settings.MP3_QUEUE, self.handle, prefetch=4)

    async def handle(self, delivery: Delivery) -> None:
        """Notify the owner of one finished job, once."""
        try:
            message = Mp3Ready.model_validate(delivery.body)
        except ValidationError as exc:
            raise PermanentFailure(f"not an mp3 message: {exc}") from exc
        job = await run_in_transaction(self.backends.sessions, _claim, message.job_id)
        if job is None:
            return  # already notified, or the job was deleted
        try:
            await asyncio.to_thread(self.mail.send, self.email_for(job))
        except Exception:
            await run_in_transaction(self.backends.sessions, jobs.release_notification, job.id)
            raise
        if job.webhook_url:
            await self._call_webhook(job)

    def email_for(self, job: Job) -> EmailMessage:
        """The email telling the owner how their job ended."""
        message = EmailMessage()
        message["From"] = self.settings.SMTP_FROM
        message["To"] = job.owner
        if job.status == JobStatus.DONE:
            link = f"{self.settings.PUBLIC_URL.rstrip('/')}/download?fid={quote(job.mp3_fid or '')}"
            message["Subject"] = f"Your MP3 is ready: {job.filename}"
            message.set_content(
                f"Your MP3 of {job.filename} is ready.\n\n"
                f"fid: {job.mp3_fid}\n"
                f"Download: {link}\n\n"
                f'curl --output song.mp3 -X GET -H "Authorization: Bearer $JWT" "{link}"\n'
                + (f"\nNote: {job.warning}\n" if job.warning else ""),
                cte="8bit",
            )
        else:
            message["Subject"] = f"Conversion failed: {job.filename}"
            message.set_content(f"We could not convert {job.filename}.\n\nReason: {job.error}\n", cte="8bit")
        message["X-Alchemist-Job"] = job.id
        return message

    async def _call_webhook(self, job: Job) -> None:
        payload = json.dumps(jobs.job_json(job), sort_keys=True).encode()
        signature = hmac.new(self.settings.webhook_secret().encode(), payload, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Alchemist-Signature": f"sha256={signature}",
        }
        for attempt, delay in enumerate((*WEBHOOK_DELAYS, None), start=1):
            try:
                response = await self.http.post(job.webhook_url or "", content=payload, headers=headers)
                if response.status_code < 500:
                    return
            except httpx.HTTPError as exc:
                logger.warning("webhook for job %s failed (attempt %d): %s", job.id, attempt, exc)
            if delay is None:
                logger.error("webhook for job %s gave up after %d attempts", job.id, attempt)
                return
            await asyncio.sleep(delay)


def _claim(session: Session, job_id: str) -> Job | None:
    """The job, if this caller is the one to notify its owner (once per job)."""
    return jobs.get_job(session, job_id) if jobs.claim_notification(session, job_id) else None
