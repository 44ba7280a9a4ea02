"""A database that is down or restarting is a 503 with Retry-After, never a 500."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

logger = logging.getLogger(__name__)
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
