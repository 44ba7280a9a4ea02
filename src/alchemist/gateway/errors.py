"""Error handlers: every error is `{"detail": "<sentence>"}`; an unreachable backend is a 503."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from alchemist.db.outage import database_unavailable
from alchemist.storage.base import BlobError, BlobNotFoundError

logger = logging.getLogger(__name__)
RETRY_AFTER = "5"


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 with the problems as one sentence, naming each parameter (not FastAPI's list)."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(problems) or "the request is invalid"}, 422)


async def storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The blob store failed; a missing file is a 404."""
    if isinstance(exc, BlobNotFoundError):
        return JSONResponse({"detail": "the file is gone (the job was deleted or expired)"}, 404)
    logger.warning("storage failed on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "file storage is unavailable; try again shortly"},
        503,
        headers={"Retry-After": RETRY_AFTER},
    )


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback, answered without one."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; it has been logged"}, 500)


def install(app: FastAPI) -> None:
    """Register every handler on the app."""
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(DBAPIError, database_unavailable)
    app.add_exception_handler(BlobError, storage_unavailable)
    from pymongo.errors import PyMongoError  # GridFS unreachable: also a storage outage

    app.add_exception_handler(PyMongoError, storage_unavailable)
    app.add_exception_handler(Exception, internal_error)
