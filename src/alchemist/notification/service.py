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
from email.utils import formatdate
from urllib.parse import quote, urlsplit

import httpx
from sqlalchemy.orm import Session

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import run_in_transaction
from alchemist.db.models import Job, JobStatus
from alchemist.links import DownloadLinks
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
        message["Date"] = formatdate(usegmt=True)
        # Stable per job: a duplicate notification is recognisable as the same message.
        message["Message-ID"] = f"<job-{job.id}@{self._mail_domain()}>"
        if job.status == JobStatus.DONE:
            public = self.settings.PUBLIC_URL.rstrip("/")
            seeds_link = f"{public}/download?fid={quote(job.mp3_fid or '')}"
            days = max(1, self.settings.DOWNLOAD_LINK_TTL_SECONDS // 86_400)
            message["Subject"] = f"Your MP3 is ready: {job.filename}"
            message.set_content(
                f"Your MP3 of {job.filename} is ready.\n\n"
                f"Download it (the link works for {days} days, or until you delete the job):\n"
                f"{self.download_url(job)}\n\n"
                f"fid: {job.mp3_fid}\n"
                f'curl --output song.mp3 -X GET -H "Authorization: Bearer $JWT" "{seeds_link}"\n'
                + (f"\nNote: {job.warning}\n" if job.warning else ""),
                cte="8bit",
            )
        else:
            message["Subject"] = f"Conversion failed: {job.filename}"
            message.set_content(f"We could not convert {job.filename}.\n\nReason: {job.error}\n", cte="8bit")
        message["X-Alchemist-Job"] = job.id
        return message

    def download_url(self, job: Job) -> str | None:
        """The signed link to the job's output that works in a browser with no header."""
        if job.status != JobStatus.DONE or not job.mp3_fid:
            return None
        links = DownloadLinks(self.settings.jwt_secret(), self.settings.DOWNLOAD_LINK_TTL_SECONDS)
        return links.url(self.settings.PUBLIC_URL, job.id, job.mp3_fid)

    def _mail_domain(self) -> str:
        return urlsplit(self.settings.PUBLIC_URL).hostname or "audio-alchemist.invalid"

    async def _call_webhook(self, job: Job) -> None:
        payload = json.dumps(jobs.job_json(job, self.download_url(job)), sort_keys=True).encode()
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
