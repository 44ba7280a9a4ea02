"""Parse the HTTP `Authorization` header (Basic and Bearer) without ever raising."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass


class CredentialsError(Exception):
    """The header is missing or is not the expected scheme; the message says which."""


@dataclass(frozen=True)
class BasicCredentials:
    """A username and password from `Authorization: Basic ...`."""

    username: str
    password: str


def _split_scheme(header: str | None, scheme: str) -> str:
    if header is None or not header.strip():
        raise CredentialsError("Missing credentials: send an Authorization header")
    found, _, value = header.strip().partition(" ")
    if found.lower() != scheme.lower():
        raise CredentialsError(f"Authorization scheme must be {scheme}, got {found[:20]!r}")
    value = value.strip()
    if not value:
        raise CredentialsError(f"Authorization header has the {scheme} scheme but no credential")
    return value


def parse_basic(header: str | None) -> BasicCredentials:
    """Username and password from a Basic header (RFC 7617, UTF-8)."""
    encoded = _split_scheme(header, "Basic")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CredentialsError("Basic credentials are not valid base64 of UTF-8 text") from exc
    username, colon, password = decoded.partition(":")
    if not colon:
        raise CredentialsError("Basic credentials must be 'username:password'")
    if not username:
        raise CredentialsError("Basic credentials have an empty username")
    return BasicCredentials(username=username, password=password)


def parse_bearer(header: str | None) -> str:
    """The token from a Bearer header (RFC 6750); it is not checked here."""
    token = _split_scheme(header, "Bearer")
    if " " in token:
        raise CredentialsError("Bearer credential must be a single token")
    return token
