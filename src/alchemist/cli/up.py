"""`alchemist up`: every service in one process on the embedded backends."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets

import httpx
import uvicorn

from alchemist import jobs
from alchemist.auth.app import create_app as create_auth_app
from alchemist.auth.passwords import PasswordVault
from alchemist.auth.users import add_user, list_users
from alchemist.cli.services import ALL_INTERFACES, LOOPBACK
from alchemist.config import Settings
from alchemist.converter.worker import ConverterService, build_engine
from alchemist.db.engine import transaction
from alchemist.db.models import JobStatus
from alchemist.gateway.app import create_app as create_gateway_app
from alchemist.messaging.memory import InMemoryBroker
from alchemist.messaging.messages import Mp3Ready, VideoUploaded
from alchemist.notification.channels.webhook import webhook_client
from alchemist.notification.mail import build_sender
from alchemist.notification.service import NotificationService
from alchemist.outbox import OutboxRelay
from alchemist.telemetry import Telemetry
from alchemist.wiring import Backends, build_backends

logger = logging.getLogger(__name__)
ADMIN_EMAIL = "admin@alchemist.local"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the up subcommand."""
    up = commands.add_parser("up", help="run everything in one process (embedded backends)")
    up.add_argument(
        "--host", default=LOOPBACK,
        help=f"address to bind (default {LOOPBACK}: this machine only; {ALL_INTERFACES}: every interface)",
    )  # fmt: skip
    up.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    up.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    up.set_defaults(run=run_up)


def run_up(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    asyncio.run(_up(args.host, args.port, args.concurrency))
    return 0


def ensure_admin(backends: Backends) -> str | None:
    """On first start (no users at all) create the admin; its password, shown once."""
    with transaction(backends.sessions) as session:
        if list_users(session):
            return None
        password = secrets.token_urlsafe(12)
        add_user(session, PasswordVault(), ADMIN_EMAIL, password, admin=True)
        return password


async def requeue_unfinished(settings: Settings, backends: Backends) -> int:
    """Publish again what an in-process queue lost when the process stopped."""

    def pending() -> tuple[list[VideoUploaded], list[Mp3Ready]]:
        with transaction(backends.sessions) as session:
            videos = [
                VideoUploaded(job_id=j.id, video_fid=j.video_fid or "", username=j.owner)
                for j in jobs.unfinished_jobs(session)
            ]
            mp3s = [
                Mp3Ready(job_id=j.id, video_fid=j.video_fid or "", mp3_fid=j.mp3_fid, username=j.owner,
                         status="done" if j.status == JobStatus.DONE else "failed", error=j.error)
                for j in jobs.unnotified_jobs(session)
            ]  # fmt: skip
        return videos, mp3s

    videos, mp3s = await asyncio.to_thread(pending)
    for video in videos:
        await backends.broker.publish(
            settings.VIDEO_QUEUE, video.to_body(), message_id=f"{video.job_id}.video"
        )
    for mp3 in mp3s:
        await backends.broker.publish(
            settings.MP3_QUEUE, mp3.to_body(), message_id=f"{mp3.job_id}.{mp3.status}"
        )
    return len(videos) + len(mp3s)


async def _up(host: str, port: int, concurrency: int) -> None:
    settings = Settings()
    shown = "localhost" if host in (ALL_INTERFACES, "::") else host
    if "PUBLIC_URL" not in os.environ:  # links in emails point at this very server
        settings = settings.model_copy(update={"PUBLIC_URL": f"http://{shown}:{port}"})
    backends = await build_backends(settings, name="up", broker=InMemoryBroker(settings.MAX_ATTEMPTS))
    engine = build_engine(settings)
    auth_app = create_auth_app(settings, engine=backends.engine)
    try:
        password = await asyncio.to_thread(ensure_admin, backends)
        async with (
            auth_app.router.lifespan_context(auth_app),
            webhook_client() as http,
        ):
            telemetry = Telemetry()  # one registry: the gateway's /metrics shows every service
            relay = OutboxRelay(backends.sessions, backends.broker, telemetry=telemetry)
            relay.start()
            gateway = create_gateway_app(
                settings, backends, httpx.ASGITransport(app=auth_app), relay=relay, telemetry=telemetry
            )
            converting = await ConverterService(settings, backends, engine, relay, telemetry).start(
                concurrency
            )
            sender = build_sender(settings)
            notifying = await NotificationService(settings, backends, sender, http, relay, telemetry).start()
            requeued = await requeue_unfinished(settings, backends)
            print(
                f"Audio Alchemist is up: http://{shown}:{port}  (data in {settings.ALCHEMIST_DATA_DIR})",
                flush=True,
            )
            if host == LOOPBACK:
                print(
                    f"Listening on {LOOPBACK} only; to reach it from other machines: "
                    f"alchemist up --host {ALL_INTERFACES}",
                    flush=True,
                )
            if password:
                print(
                    f"First start: created admin {ADMIN_EMAIL} with password {password}  (shown once)",
                    flush=True,
                )
            if requeued:
                logger.info("re-enqueued %d unfinished jobs", requeued)
            server = uvicorn.Server(
                uvicorn.Config(  # proxy_headers: the gateway's TrustedProxyHeaders decides
                    gateway, host=host, port=port, log_level="info", server_header=False, proxy_headers=False
                )
            )
            await server.serve()
            await converting.cancel(grace=5)
            await notifying.cancel(grace=5)
            await relay.stop()
    finally:
        engine.close()
        await backends.close()
