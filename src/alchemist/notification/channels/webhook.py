"""The webhook channel: one POST per delivery attempt, signed the Standard Webhooks way.

Headers `webhook-id` (the delivery id, the same on every retry), `webhook-timestamp` (unix
seconds of this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
under WEBHOOK_SECRET; the body is `{"type": "job.done" | "job.failed", "timestamp", "data"}`
(docs/webhooks.md). The POST goes only to an address netguard allows, never follows a redirect.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

from alchemist import __version__, jobs, netguard
from alchemist.config import Settings
from alchemist.db.models import Job, JobStatus
from alchemist.notification.channels.email import download_url

# Worth another try: the receiver is down, overloaded or asked us to slow down.
RETRY_STATUSES = frozenset({408, 425, 429})
TIMEOUT_SECONDS = 15.0  # the spec recommends 15 to 30 s for a receiver to answer
EVENT_DONE, EVENT_FAILED = "job.done", "job.failed"
EVENTS = (EVENT_DONE, EVENT_FAILED)


class WebhookRetry(Exception):  # noqa: N818 (a verdict: try this delivery again later)
    """The receiver did not take the delivery; the message says why."""


class WebhookRefused(Exception):  # noqa: N818 (a verdict: never send this one)
    """This delivery must not be sent (a forbidden address, or webhooks are not configured)."""


class WebhookRejected(Exception):  # noqa: N818 (a verdict: the receiver said no for good)
    """The receiver answered with a status that another try would not change (3xx, most 4xx)."""


def event_type(job: Job) -> str:
    """The event a finished job announces."""
    return EVENT_DONE if job.status == JobStatus.DONE else EVENT_FAILED


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def webhook_client() -> httpx.AsyncClient:
    """The client webhooks are sent with: no proxy from the environment, no redirects.

    (A proxy would reach what netguard refuses; redirects would leave the checked address.)
    """
    return httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=TIMEOUT_SECONDS)


@dataclass
class WebhookChannel:
    """Posts a finished job's event to the URL the upload gave, signed, to a checked address."""

    settings: Settings
    http: httpx.AsyncClient

    def payload(self, job: Job, event: str, occurred_at: datetime) -> bytes:
        """The body: the event's type and moment, and the job's JSON (minified, as signed)."""
        document: dict[str, Any] = {
            "type": event,
            "timestamp": occurred_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
            "data": jobs.job_json(job, download_url(self.settings, job)),
        }
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    async def deliver(self, job: Job, delivery_id: str, event: str, occurred_at: datetime) -> None:
        """Post once. WebhookRetry: worth another try later; WebhookRefused / WebhookRejected: never."""
        key = self.settings.webhook_key()
        if key is None:
            raise WebhookRefused("webhooks are not configured on this server (WEBHOOK_SECRET is not set)")
        body = self.payload(job, event, occurred_at)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"audio-alchemist-webhooks/{__version__}",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, delivery_id, timestamp, body),
        }
        try:
            status = await netguard.pinned_post(
                self.http, job.webhook_url or "", content=body, headers=headers,
                allowed=self.settings.webhook_networks, timeout=TIMEOUT_SECONDS,
            )  # fmt: skip
        except netguard.ForbiddenAddress as exc:
            raise WebhookRefused(str(exc)) from exc
        except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:  # down, unreachable, no DNS
            raise WebhookRetry(f"{type(exc).__name__}: {exc}") from exc
        if status >= 500 or status in RETRY_STATUSES:
            raise WebhookRetry(f"HTTP {status}")
        if not 200 <= status < 300:
            hint = " (redirects are not followed: update the webhook URL)" if 300 <= status < 400 else ""
            raise WebhookRejected(f"HTTP {status}{hint}")
