"""A database that is down or restarting is a 503 with Retry-After, never a 500."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

logger = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_AFTER = "5"


def is_outage(exc: BaseException) -> bool:
    """True for lost or refused connections (not for a bug in a query)."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with a short message (the driver's words stay in the log); other errors are 500s."""
    if not is_outage(exc):
        logger.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error; it has been logged"}, 500)
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the database is unavailable; try again shortly"},
        503,
        headers={"Retry-After": RETRY_AFTER},
    )


async def outlasting(work: Callable[[], Awaitable[T]], *, every: float, what: str) -> T:
    """`work()`, retried every `every` seconds while the database is unreachable.

    A handler that holds its message through an outage spends none of its few deliveries.
    """
    warned = False
    while True:
        try:
            return await work()
        except DBAPIError as exc:
            if not is_outage(exc):
                raise
            if not warned:
                logger.warning("%s waits for the database to come back: %s", what, exc)
                warned = True
            await asyncio.sleep(every)
