"""Signed, expiring download links: a browser (or a mail client) downloads with no header.

The gateway verifies what the gateway and the notification service sign; both derive the
key from JWT_SECRET, so no new secret has to be distributed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

LINK_KEY_PURPOSE = b"alchemist download link v1"
# Expiry is rounded up to the hour so that a job's link stays the same while it is shown
# (the live list compares payloads); a link therefore lives between ttl and ttl + 1 h.
EXPIRY_GRANULARITY = 3600


class LinkError(Exception):
    """The link is not valid: wrong signature or expired; the message says which."""


def derive_key(secret: str, purpose: bytes) -> bytes:
    """A key for one purpose, so a signature made for one use never verifies for another."""
    return hmac.new(secret.encode(), purpose, hashlib.sha256).digest()


@dataclass(frozen=True)
class DownloadLinks:
    """Signs `/api/v1/jobs/{id}/download` links tied to a job and its output."""

    secret: str
    ttl_seconds: int
    clock: Callable[[], float] = field(default=time.time)

    def query(self, job_id: str, output_fid: str) -> dict[str, str]:
        """The query parameters (`expires`, `signature`) of a fresh link."""
        expires = math.ceil((self.clock() + self.ttl_seconds) / EXPIRY_GRANULARITY) * EXPIRY_GRANULARITY
        return {"expires": str(expires), "signature": self._sign(job_id, output_fid, expires)}

    def url(self, base_url: str, job_id: str, output_fid: str) -> str:
        """The absolute link under `base_url` (the gateway's public address)."""
        path = f"/api/v1/jobs/{quote(job_id, safe='')}/download"
        return f"{base_url.rstrip('/')}{path}?{urlencode(self.query(job_id, output_fid))}"

    def check(self, job_id: str, output_fid: str, expires: int, signature: str) -> None:
        """Raise LinkError unless the link was signed for this job's output and has not expired."""
        expected = self._sign(job_id, output_fid, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise LinkError("this download link is not valid (wrong signature, or the file was replaced)")
        if expires < self.clock():
            raise LinkError("this download link has expired; sign in to download the file")

    def _sign(self, job_id: str, output_fid: str, expires: int) -> str:
        message = f"{job_id}\n{output_fid}\n{expires}".encode()
        return hmac.new(derive_key(self.secret, LINK_KEY_PURPOSE), message, hashlib.sha256).hexdigest()
