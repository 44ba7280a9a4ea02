from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.orm import sessionmaker

from alchemist.auth.app import create_app
from alchemist.auth.passwords import PasswordVault
from alchemist.auth.users import add_user
from alchemist.config import Settings
from alchemist.db.engine import build_engine, transaction


@dataclass(frozen=True)
class AuthService:
    url: str
    settings: Settings

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


USERS = {"ann@example.com": ("ann-password-1", True), "bob@example.com": ("bob-password-1", False)}


@pytest.fixture
def auth_service(
    settings: Settings, http_server: Callable[[object], AbstractContextManager[str]]
) -> Iterator[AuthService]:
    """The auth app on a real socket, over the parametrised database, with ann (admin) and bob."""
    with http_server(create_app(settings)) as url:
        engine = build_engine(settings.database_url)
        vault = PasswordVault()
        with transaction(sessionmaker(engine)) as session:
            for email, (password, admin) in USERS.items():
                add_user(session, vault, email, password, admin=admin)
        engine.dispose()
        yield AuthService(url, settings)
