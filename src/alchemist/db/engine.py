"""Build engines and sessions; nothing connects at import time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

P = ParamSpec("P")
T = TypeVar("T")


def build_engine(url: URL) -> Engine:
    """An engine for the URL, with SQLite tuned for several threads and processes."""
    if url.get_backend_name() == "sqlite":
        if url.database:
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=3600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI and the services read while one of them writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """The one place that commits: a session committed on success, rolled back on error."""
    with sessions() as session, session.begin():
        yield session


async def run_in_transaction(
    sessions: sessionmaker[Session],
    work: Callable[Concatenate[Session, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """`work(session, ...)` in one transaction, in a worker thread (blocking I/O off the loop)."""

    def run() -> T:
        with transaction(sessions) as session:
            return work(session, *args, **kwargs)

    return await asyncio.to_thread(run)
