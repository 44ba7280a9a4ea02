"""Per-user storage quota at the gateway (a real server on loopback, both databases)."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.orm import Session, sessionmaker

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import transaction
from alchemist.wiring import Backends
from tests.integration.conftest import bearer, configured, gateway

KIB = 1024
OWNER, OTHER = "ann@example.com", "bob@example.com"


def stored_videos(settings: Settings) -> list[Path]:
    """Every file under the video store, temp files included (nothing may be left behind)."""
    root = settings.ALCHEMIST_DATA_DIR / "videos"
    return sorted(path for path in root.rglob("*") if path.is_file())


async def post(
    http: httpx.AsyncClient, settings: Settings, sessions: sessionmaker[Session], user: str, size: int
) -> httpx.Response:
    """Upload a file of `size` bytes as `user` (the gateway stores it without looking inside)."""
    files = {"file": (f"clip-{size}.mp4", b"\x00" * size, "video/mp4")}
    return await http.post("/upload", files=files, headers=bearer(settings, sessions, user))


async def test_an_upload_past_the_quota_is_refused_and_nothing_is_kept(
    settings: Settings, backends: Backends
) -> None:
    settings = configured(settings, USER_QUOTA_BYTES=1024 * KIB)
    async with gateway(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        first = await post(http, settings, backends.sessions, OWNER, 512 * KIB)
        assert first.status_code == 202, first.text
        kept = stored_videos(settings)
        # Its declared length (less the multipart slack) fits, its actual size does not: refused
        # once stored, and what was stored is deleted again.
        after_storing = await post(http, settings, backends.sessions, OWNER, 560 * KIB)
        # Its declared length alone is too much: refused before a byte is stored.
        up_front = await post(http, settings, backends.sessions, OWNER, 900 * KIB)
        for refused in (after_storing, up_front):
            assert refused.status_code == 413, refused.text
            detail = refused.json()["detail"]
            assert detail.startswith("storage quota exceeded: you keep 512.0 KiB of your 1.0 MiB;"), detail
        assert "this upload needs 560.0 KiB" in after_storing.json()["detail"]
        assert stored_videos(settings) == kept  # no blob and no temp file of the refused ones
        # Someone else's quota is their own.
        other = await post(http, settings, backends.sessions, OTHER, 900 * KIB)
        assert other.status_code == 202, other.text
    with transaction(backends.sessions) as session:
        assert (jobs.count_jobs(session, OWNER), jobs.count_jobs(session, OTHER)) == (1, 1)
        assert jobs.stored_bytes(session, OWNER) == 512 * KIB
