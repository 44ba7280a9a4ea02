"""Subcommands that run one service in the foreground (one container each)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import uvicorn
from prometheus_client import CollectorRegistry

from alchemist.config import Settings
from alchemist.health import create_health_app
from alchemist.outbox import OutboxRelay
from alchemist.telemetry import Telemetry, create_metrics_app
from alchemist.wiring import Backends

logger = logging.getLogger(__name__)
# Safe by default: a laptop serves itself only. Containers say `--host 0.0.0.0` (their
# orchestrator's probes and peers reach the pod's address), as deploy/ does.
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what containers pass; never a default)


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
    _health_options(converter, 8081)
    converter.set_defaults(run=run_converter)
    notification = commands.add_parser("notification", help="run the notification worker")
    _health_options(notification, 8082)
    notification.set_defaults(run=run_notification)


def _listen_options(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument(
        "--host", default=LOOPBACK, help=f"address to bind (default {LOOPBACK}; containers: {ALL_INTERFACES})"
    )
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port})")


def _health_options(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument(
        "--health-host", "--host", dest="health_host", default=LOOPBACK,
        help=f"address of /healthz, /readyz, /metrics (default {LOOPBACK}; for probes: {ALL_INTERFACES})",
    )  # fmt: skip
    parser.add_argument("--health-port", type=int, default=port, help="/healthz and /readyz (0: off)")


def run_auth(args: argparse.Namespace) -> int:
    """Serve the auth API until interrupted."""
    from alchemist.auth.app import create_app

    # proxy_headers off: the app's TrustedProxyHeaders alone decides whose X-Forwarded-For counts.
    uvicorn.run(
        create_app(Settings()), host=args.host, port=args.port, log_level="info", server_header=False,
        proxy_headers=False,
    )  # fmt: skip
    return 0


def run_gateway(args: argparse.Namespace) -> int:
    """Serve the gateway until interrupted (and /metrics on METRICS_PORT when it is set)."""
    from alchemist.gateway.app import create_app

    settings = Settings()
    app = create_app(settings)
    public = uvicorn.Config(  # proxy_headers: the app's TrustedProxyHeaders decides, with TRUSTED_PROXIES
        app, host=args.host, port=args.port, log_level="info", server_header=False, proxy_headers=False
    )
    if settings.METRICS_PORT is None:
        uvicorn.Server(public).run()
        return 0
    metrics = uvicorn.Config(
        create_metrics_app(app.state.telemetry.registry), host=args.host, port=settings.METRICS_PORT,
        log_level="warning", lifespan="off", server_header=False,
    )  # fmt: skip
    asyncio.run(_serve_together(uvicorn.Server(public), uvicorn.Server(metrics)))
    return 0


async def _serve_together(main: uvicorn.Server, side: uvicorn.Server) -> None:
    """Run both servers; when the main one ends (a signal, or it could not start) stop the other."""
    side_task = asyncio.ensure_future(side.serve())
    try:
        await main.serve()
    finally:
        side.should_exit = True
        await side_task


async def wait_for_stop(
    backends: Backends, health_host: str, health_port: int, registry: CollectorRegistry | None = None
) -> None:
    """Serve the health endpoints (when asked) until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not health_port:
        await stop.wait()
        return
    config = uvicorn.Config(create_health_app(backends, registry), host=health_host, port=health_port,
                            log_level="warning", lifespan="off", server_header=False)  # fmt: skip
    logger.info("health endpoints on %s port %d", health_host, health_port)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if serving.done() and not server.should_exit:
        # uvicorn ends by itself only when it could not start (e.g. the port is taken).
        raise SystemExit(f"health endpoint could not listen on {health_host} port {health_port}")
    # Either our handler saw the signal, or uvicorn did (it sets should_exit): stop both.
    server.should_exit = True
    await serving


async def _converter(concurrency: int, grace: float, health_host: str, health_port: int) -> None:
    from alchemist.converter.worker import ConverterService, build_engine
    from alchemist.wiring import build_backends

    settings = Settings()
    backends = await build_backends(settings, name="converter")
    engine = build_engine(settings)
    telemetry = Telemetry()
    relay = OutboxRelay(backends.sessions, backends.broker, telemetry=telemetry)
    relay.start()
    try:
        service = ConverterService(settings, backends, engine, relay, telemetry)
        subscription = await service.start(concurrency)
        logger.info("converter consuming %s (concurrency %d)", settings.VIDEO_QUEUE, concurrency)
        await wait_for_stop(backends, health_host, health_port, telemetry.registry)
        logger.info("stopping: finishing the jobs in hand (up to %.0f s)", grace)
        await subscription.cancel(grace=grace)
    finally:
        await relay.stop()
        engine.close()
        await backends.close()
    logger.info("converter stopped")


def run_converter(args: argparse.Namespace) -> int:
    """Convert until SIGTERM; then finish (or hand back) the jobs in hand."""
    asyncio.run(_converter(args.concurrency, args.grace, args.health_host, args.health_port))
    return 0


async def _notification(health_host: str, health_port: int) -> None:
    from alchemist.notification.channels.webhook import webhook_client
    from alchemist.notification.mail import build_sender
    from alchemist.notification.service import NotificationService
    from alchemist.wiring import build_backends

    settings = Settings()
    backends = await build_backends(settings, name="notification")
    telemetry = Telemetry()
    relay = OutboxRelay(backends.sessions, backends.broker, telemetry=telemetry)
    relay.start()
    async with webhook_client() as http:
        try:
            service = NotificationService(settings, backends, build_sender(settings), http, relay, telemetry)
            subscription = await service.start()
            logger.info("notification consuming %s", settings.MP3_QUEUE)
            await wait_for_stop(backends, health_host, health_port, telemetry.registry)
            await subscription.cancel(grace=10)
        finally:
            await relay.stop()
            await backends.close()


def run_notification(args: argparse.Namespace) -> int:
    """Notify until SIGTERM."""
    asyncio.run(_notification(args.health_host, args.health_port))
    return 0
