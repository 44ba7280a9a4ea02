"""The webhook channel: one signed POST of the job's JSON per delivery attempt."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import httpx

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.models import Job
from alchemist.notification.channels.email import download_url

# Worth another try: the receiver is down, overloaded or asked us to slow down.
RETRY_STATUSES = frozenset({408, 425, 429})


class WebhookRetry(Exception):  # noqa: N818 (a verdict: try this delivery again later)
    """The receiver did not take the delivery; the message says why."""


@dataclass
class WebhookChannel:
    """Posts the job's JSON, HMAC-SHA256 signed, with a delivery id that stays the same on retries."""

    settings: Settings
    http: httpx.AsyncClient

    async def deliver(self, job: Job, delivery_id: str, attempt: int) -> None:
        """Post once; WebhookRetry when the receiver failed in a way worth retrying."""
        payload = json.dumps(jobs.job_json(job, download_url(self.settings, job)), sort_keys=True).encode()
        key = self.settings.webhook_secret().encode()
        headers = {
            "Content-Type": "application/json",
            "X-Alchemist-Signature": f"sha256={hmac.new(key, payload, hashlib.sha256).hexdigest()}",
            "X-Alchemist-Delivery": delivery_id,
            "X-Alchemist-Attempt": str(attempt),
        }
        try:
            response = await self.http.post(job.webhook_url or "", content=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise WebhookRetry(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in RETRY_STATUSES:
            raise WebhookRetry(f"HTTP {response.status_code}")
