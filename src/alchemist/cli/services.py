"""Subcommands that run one service in the foreground (one container each)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import httpx
import uvicorn

from alchemist.config import Settings

logger = logging.getLogger(__name__)
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (services listen on every interface, as the seeds explain)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the service subcommands."""
    auth = commands.add_parser("auth", help="run the auth service (login, validate)")
    _listen_options(auth, 5000)
    auth.set_defaults(run=run_auth)
    gateway = commands.add_parser("gateway", help="run the gateway (the public HTTP API)")
    _listen_options(gateway, 8080)
    gateway.set_defaults(run=run_gateway)
    converter = commands.add_parser("converter", help="run a converter worker")
    converter.add_argument("--concurrency", type=int, default=1, help="conversions at once")
    grace = float(os.environ.get("ALCHEMIST_SHUTDOWN_GRACE", 25))
    converter.add_argument(
        "--grace", type=float, default=grace, help="seconds to finish the job in hand on SIGTERM"
    )
    converter.set_defaults(run=run_converter)
    notification = commands.add_parser("notification", help="run the notification worker")
    notification.set_defaults(run=run_notification)


def _listen_options(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default=ALL_INTERFACES, help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port})")


def run_auth(args: argparse.Namespace) -> int:
    """Serve the auth API until interrupted."""
    from alchemist.auth.app import create_app

    uvicorn.run(create_app(Settings()), host=args.host, port=args.port, log_level="info")
    return 0


def run_gateway(args: argparse.Namespace) -> int:
    """Serve the gateway until interrupted."""
    from alchemist.gateway.app import create_app

    uvicorn.run(create_app(Settings()), host=args.host, port=args.port, log_level="info")
    return 0


async def wait_for_stop() -> None:
    """Until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _converter(concurrency: int, grace: float) -> None:
    from alchemist.converter.worker import ConverterService, build_engine
    from alchemist.wiring import build_backends

    settings = Settings()
    backends = await build_backends(settings, name="converter")
    engine = build_engine(settings)
    try:
        service = ConverterService(settings, backends, engine)
        subscription = await service.start(concurrency)
        logger.info("converter consuming %s (concurrency %d)", settings.VIDEO_QUEUE, concurrency)
        await wait_for_stop()
        logger.info("stopping: finishing the jobs in hand (up to %.0f s)", grace)
        await subscription.cancel(grace=grace)
    finally:
        engine.close()
        await backends.close()
    logger.info("converter stopped")


def run_converter(args: argparse.Namespace) -> int:
    """Convert until SIGTERM; then finish (or hand back) the jobs in hand."""
    asyncio.run(_converter(args.concurrency, args.grace))
    return 0


async def _notification() -> None:
    from alchemist.notification.mail import build_sender
    from alchemist.notification.service import NotificationService
    from alchemist.wiring import build_backends

    settings = Settings()
    backends = await build_backends(settings, name="notification")
    async with httpx.AsyncClient(timeout=15) as http:
        try:
            service = NotificationService(settings, backends, build_sender(settings), http)
            subscription = await service.start()
            logger.info("notification consuming %s", settings.MP3_QUEUE)
            await wait_for_stop()
            await subscription.cancel(grace=10)
        finally:
            await backends.close()


def run_notification(_args: argparse.Namespace) -> int:
    """Notify until SIGTERM."""
    asyncio.run(_notification())
    return 0
