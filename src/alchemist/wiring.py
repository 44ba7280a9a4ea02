"""The one place that turns settings into clients: database, blob stores, broker.

Nothing connects at import time; each process builds its Backends at start and closes
them at the end, so `alchemist up`, the services and the tests choose their backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from alchemist.config import ConfigError, Settings
from alchemist.db.engine import build_engine
from alchemist.db.migrate import upgrade
from alchemist.messaging.base import Broker
from alchemist.messaging.memory import InMemoryBroker
from alchemist.messaging.rabbitmq import RabbitMQBroker
from alchemist.storage.base import BlobStore
from alchemist.storage.files import FileStore


@dataclass
class Backends:
    """Every client a service needs; `close()` releases them."""

    engine: Engine
    sessions: sessionmaker[Session]
    videos: BlobStore
    mp3s: BlobStore
    broker: Broker
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    async def close(self) -> None:
        """Close the broker, the database pool and any storage client."""
        await self.broker.close()
        for closer in self._closers:
            closer()
        self.engine.dispose()


def build_database(settings: Settings) -> tuple[Engine, sessionmaker[Session]]:
    """The engine, migrated first when embedded or when ALCHEMIST_MIGRATE_ON_START is set."""
    engine = build_engine(settings.database_url)
    if settings.embedded or settings.ALCHEMIST_MIGRATE_ON_START:
        upgrade(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


def build_blob_stores(settings: Settings) -> tuple[BlobStore, BlobStore, list[Callable[[], Any]]]:
    """Videos and MP3s: GridFS databases when MONGODB_URI is set, else folders in the data dir."""
    if settings.MONGODB_URI is not None:
        import pymongo

        from alchemist.storage.gridfs import GridFSStore

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.MONGODB_URI.get_secret_value(), serverSelectionTimeoutMS=5000
        )
        return (
            GridFSStore(client[settings.MONGODB_VIDEOS_DB]),
            GridFSStore(client[settings.MONGODB_MP3S_DB]),
            [client.close],
        )
    root = settings.ALCHEMIST_DATA_DIR
    return FileStore(root / "videos"), FileStore(root / "mp3s"), []


def build_broker(settings: Settings, *, name: str, in_process_ok: bool) -> Broker:
    """RabbitMQ when configured; the in-process broker only where allowed (alchemist up)."""
    url = settings.amqp_url
    if url:
        return RabbitMQBroker(url, max_attempts=settings.MAX_ATTEMPTS, connection_name=name)
    if not in_process_ok:
        raise ConfigError(
            f"{name} runs as its own process and needs RabbitMQ: set AMQP_URL or RABBITMQ_HOST "
            "(or run every service in one process with `alchemist up`)"
        )
    return InMemoryBroker(max_attempts=settings.MAX_ATTEMPTS)


async def build_backends(
    settings: Settings, *, name: str, in_process_ok: bool = False, broker: Broker | None = None
) -> Backends:
    """Everything, connected."""
    engine, sessions = build_database(settings)
    videos, mp3s, closers = build_blob_stores(settings)
    chosen = broker or build_broker(settings, name=name, in_process_ok=in_process_ok)
    await chosen.connect()
    return Backends(engine, sessions, videos, mp3s, chosen, closers)
