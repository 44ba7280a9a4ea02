"""The web page at `/` and Swagger UI at `/docs`, both served from the package (no CDN).

`docs_router` is included only when API_DOCS is on (off: /docs and /openapi.json are 404s).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB = Path(__file__).resolve().parent.parent / "web"
router = APIRouter(tags=["pages"], include_in_schema=False)
docs_router = APIRouter(tags=["pages"], include_in_schema=False)
# The page itself is small and changes with each release; its assets carry validators.
NO_CACHE = {"Cache-Control": "no-cache"}


@router.get("/")
async def index_page() -> FileResponse:
    """The web app: sign in, upload, follow and download."""
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)


@docs_router.get("/docs")
async def docs_page() -> FileResponse:
    """Swagger UI for /openapi.json."""
    return FileResponse(WEB / "docs.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """Browsers ask for it on pages that are not ours (a JSON error, an MP3 opened inline)."""
    return FileResponse(WEB / "static" / "favicon.svg", media_type="image/svg+xml")
